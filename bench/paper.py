"""Reproduce every paper figure end to end (what ``make paper`` runs): for each figure's shipped
config, ``qunlearn run``, then ``qunlearn compare`` (kinds with published numbers) and
``qunlearn plot``; then ``qunlearn report`` of them all (``report.html`` beside them); prints each
figure's wall time, the report's and the total, and writes them to ``results/paper_times.json``.

    .venv/bin/python bench/paper.py                  # every figure (55 min measured, 2-core CPU)
    .venv/bin/python bench/paper.py --only fig2c_mnist fig3a_mnist
    .venv/bin/python bench/paper.py --extras         # also the beyond-the-paper studies
    .venv/bin/python bench/paper.py --tiny           # every config's smoke settings (minutes)
    .venv/bin/python bench/paper.py --complex64      # every QNN in complex64 (float64 readout)
    .venv/bin/python bench/paper.py --complex64 --float32   # and every MLP in float32

Each step is the CLI in a subprocess (exactly what a user types), so a figure that was already
computed resumes from its cells; delete its results directory for a cold timing. A failing step
stops the script with that step's exit status, after printing the times so far.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

# (config name, has published numbers to compare with)
FIGURES = [
    ("fig2c_mnist", True),  # Fig 2c
    ("fig2d_xxz", True),  # Fig 2d
    ("fig3a_mnist", True),  # Fig 3a
    ("fig3b_xxz", True),  # Fig 3b
    ("fig3_sweep_mnist_mlp", True),  # supplementary weight sweeps (protocol §4)
    ("fig3_sweep_mnist_qnn", True),
    ("roughening_mnist", True),  # §5
]
EXTRAS = [("roughening_fig2_models", True), ("curvature_mnist", False)]


def step(argv: list[str]) -> float:
    """Run ``qunlearn argv`` and return its wall seconds; exit with its status if it fails."""
    print("$ qunlearn " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "qunlearn", *argv])
    if code:
        raise SystemExit(code)
    return time.perf_counter() - start


def precision(name: str, complex64: bool, float32: bool) -> list[str]:
    """Overrides of config ``name``: ``complex64`` puts its ``[models.qnn]`` (if it has one) in
    complex64, its readout in float64 (a float32 sigmoid saturates at the reference encoding's
    scale); ``float32`` puts its ``[models.mlp]`` in float32 (its sigmoid stays float64)."""
    from qunlearn.experiments.shipped import find_config

    models = tomllib.loads(find_config(name).read_text(encoding="utf-8")).get("models", {})
    out = []
    if complex64 and "qnn" in models:
        out += ['models.qnn.hyper.dtype="complex64"', 'models.qnn.hyper.readout_dtype="float64"']
    if float32 and "mlp" in models:
        out += ['models.mlp.hyper.dtype="float32"']
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="CONFIG", help="these configs only")
    ap.add_argument("--extras", action="store_true", help="also " + ", ".join(n for n, _ in EXTRAS))
    ap.add_argument("--tiny", action="store_true", help="each config's [tiny] smoke settings")
    ap.add_argument(
        "--complex64",
        action="store_true",
        help="every [models.qnn] in complex64 with a float64 readout (results/paper_complex64)",
    )
    ap.add_argument(
        "--float32",
        action="store_true",
        help="every [models.mlp] in float32, the reference's Keras default (..._float32)",
    )
    ap.add_argument("--results", default="results", help="parent of the results directories")
    args = ap.parse_args(argv)
    figures = FIGURES + (EXTRAS if args.extras else [])
    if args.only:
        known = dict(FIGURES + EXTRAS)
        unknown = [n for n in args.only if n not in known]
        if unknown:
            raise SystemExit(f"error: unknown figure config {unknown}: choose from {list(known)}")
        figures = [(n, known[n]) for n in args.only]
    variant = "_tiny" * args.tiny + "_complex64" * args.complex64 + "_float32" * args.float32
    root = Path(args.results) / (f"paper{variant}" if variant else "")
    times: dict[str, dict[str, float]] = {}
    try:
        for name, comparable in figures:
            out = str(root / name)
            overrides = precision(name, args.complex64, args.float32)
            tiny = ["--tiny"] if args.tiny else []
            t = {"run": step(["run", name, *overrides, "--out", out, *tiny])}
            if comparable:
                t["compare"] = step(["compare", out])
            t["plot"] = step(["plot", out])
            times[name] = t
        report = str(root / "report.html")
        times["report"] = {
            "report": step(["report", *(str(root / n) for n in times), "--out", report])
        }
    finally:
        print(f"\n{'figure':<24}{'run s':>9}{'compare s':>11}{'plot s':>9}{'total s':>10}")
        for name, t in times.items():
            if name == "report":
                print(f"{'report (all of them)':<24}{'':>29}{t['report']:>10.0f}")
                continue
            print(
                f"{name:<24}{t['run']:>9.0f}{t.get('compare', 0):>11.1f}{t['plot']:>9.1f}"
                f"{sum(t.values()):>10.0f}"
            )
        total = sum(sum(t.values()) for t in times.values())
        print(f"{'total':<24}{'':>29}{total:>10.0f}  ({total / 60:.1f} min)")
        if times:
            root.mkdir(parents=True, exist_ok=True)
            (root / "paper_times.json").write_text(json.dumps(times, indent=1) + "\n")


if __name__ == "__main__":
    main()
