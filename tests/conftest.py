"""Session set-up: float64/complex128 JAX, as the entry points set it; a private dataset cache and
a shared XLA compilation cache for the whole run. Nothing else is global.

* No test reads or writes the user's ``~/.cache``: ``QUNLEARN_CACHE`` points at a directory of
  this run (subprocesses inherit it); MNIST is converted there once per worker from the pinned
  package.
* Figures are written as PNG alone (``QUNLEARN_FIGURE_FORMATS``), subprocesses included.
* JAX's persistent compilation cache (``.pytest_cache/jax``, inside the checkout) lets a program
  that several tests, subprocesses or runs compile load its executable instead.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
os.environ["QUNLEARN_CACHE"] = tempfile.mkdtemp(prefix="qunlearn-test-cache-")
atexit.register(shutil.rmtree, os.environ["QUNLEARN_CACHE"], ignore_errors=True)
# PNG only: a figure's PDF costs more to render than its PNG (~130 figures per run of the suite);
# test_plotting checks the default PNG + PDF with the variable removed.
os.environ["QUNLEARN_FIGURE_FORMATS"] = "png"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_ROOT / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# XLA's CPU fusion emitters compile ~30 % slower than the older emitter on the small programs the
# tests build (measured: cold default suite 7 min 20 s -> 6 min 32 s on 2 cores); kernel runtime
# is the same. LLVM at -O0 halves the compile time again (the CPU time of the cold default suite
# 889 s -> 545 s); the tests' tiny programs barely notice the slower kernels. Its floating-point
# results are IEEE-exact either way but not bit-identical to -O2's (no test compares with numbers
# from another process's flags: subprocesses inherit these). Tests only: the library and CLI keep
# XLA's default codegen.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
).strip()

import jax  # noqa: E402  (after the cache settings above)

jax.config.update("jax_enable_x64", True)


# The files that take longest (seconds of both tiers, CPU or wall where a test waits on other
# processes, measured per file: 10 s or more), longest first. xdist (``--dist loadfile
# --no-loadscope-reorder``, pyproject.toml) hands whole files to its workers in collection order
# as they free up: the long files start first and the short ones fill in at the end, so no long
# file starts last and runs alone (its default order, by test count, put few-test files such as
# test_example_package last). ``make test TIER=all`` (CI) runs both tiers in one session, which
# this order is for; the default tier alone keeps it. A file missing here only runs later.
LONGEST_FIRST = (
    "test_example_package.py",
    "test_dask_executor.py",
    "test_qnn.py",
    "test_unlearn.py",
    "test_fuzz_config.py",
    "test_families.py",
    "test_reliability.py",
    "test_roughening.py",
    "test_shots.py",
    "test_experiment_contract.py",
    "test_multiclass.py",
    "test_hessian.py",
    "test_curvature.py",
    "test_circuit_noise.py",
    "test_train.py",
    "test_field_methods.py",
    "test_unlearning_shots.py",
    "test_devices.py",
    "test_precision.py",
    "test_forget_requests.py",
    "test_bad_inputs.py",
    "test_device_readouts.py",
    "test_transition.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
