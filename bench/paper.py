"""Reproduce every paper figure end to end (what ``make paper`` runs): for each figure's shipped
config, ``qunlearn run``, then ``qunlearn compare`` (kinds with published numbers) and
``qunlearn plot``; then ``qunlearn report`` of them all (``report.html`` beside them); prints each
figure's wall time, the report's and the total, and writes them to ``paper_times.json`` in the
results directory and, as a page of the documentation, to ``docs/results.md``.

    .venv/bin/python bench/paper.py                  # every figure
    .venv/bin/python bench/paper.py --only fig2c_mnist fig3a_mnist
    .venv/bin/python bench/paper.py --extras         # also the beyond-the-paper studies
    .venv/bin/python bench/paper.py --tiny           # every config's smoke settings (minutes)
    .venv/bin/python bench/paper.py --complex64      # every QNN in complex64 (float64 readout)
    .venv/bin/python bench/paper.py --complex64 --float32   # and every MLP in float32

Each step is the CLI in a subprocess (exactly what a user types), so a figure that was already
computed resumes from its cells; delete its results directory for a cold timing. A failing step
stops the script with that step's exit status, after printing the times so far.

Times on shared machines move 2x between sessions, so before each figure the machine's yardstick
is measured and recorded beside its time: ``bench/bench_qnn_kernel.py --steps 10 --repeats 2``,
the sample-gradients/s of the 10-qubit complex128 QNN training step (``--no-yardstick`` skips it).
The page is written from the measurements alone: nobody types a measured number into it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

BENCH = Path(__file__).resolve().parent
YARDSTICK = ["--steps", "10", "--repeats", "2"]  # bench_qnn_kernel.py's defaults otherwise

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


def yardstick() -> float | None:
    """The machine's yardstick now: sample-gradients/s of bench_qnn_kernel.py's default step
    (None, with a warning, if it fails: the figures still run)."""
    with tempfile.TemporaryDirectory(prefix="qunlearn-yardstick-") as scratch:
        out = Path(scratch) / "yardstick.json"
        argv = [sys.executable, str(BENCH / "bench_qnn_kernel.py"), *YARDSTICK, "--json", str(out)]
        try:
            code = subprocess.call(argv, stdout=subprocess.DEVNULL, timeout=600)
        except subprocess.TimeoutExpired:
            code = "timeout"
        if code != 0 or not out.exists():
            print(f"warning: the yardstick failed ({code}); its column stays empty", flush=True)
            return None
        return float(json.loads(out.read_text())["sample_grads_per_s"])


def machine() -> str:
    """The CPU model and core count, as far as this platform tells."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores"


def outcome(out: Path) -> str:
    """What ``qunlearn compare`` found, in one line, from the files it wrote into ``out``."""
    found = []
    summary_path, table_path = out / "compare.json", out / "compare.csv"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    unmarked = "no pass marks (settings not the paper's)"
    if "passed" in summary:  # noise sweeps
        cells = summary["cells"]
        found.append(f"{summary['passed']}/{cells} cells within tolerance" if cells else unmarked)
        for c in summary.get("critical_alpha", []):
            if c.get("noise") == "label_flip" and c.get("alpha_c_ours") is not None:
                paper = c.get("alpha_c_paper")
                found.append(
                    f"label-flip α_c {c['dataset']} {c['model']} {c['alpha_c_ours']:.3f}"
                    + (f" (paper {paper:.3f})" if paper is not None else "")
                )
    elif "final_passed" in summary:  # unlearning
        found.append(
            f"final val {summary['final_passed']}/{summary['cells']} within tolerance, "
            f"start {summary['start_passed']}/{summary['start_checked']}"
            if summary["cells"]
            else unmarked
        )
    elif table_path.exists():  # roughening: trace ratios
        with table_path.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                if r.get("ratio_mean") and float(r["noise_ratio"]) > 0:
                    paper = r.get("paper_ratio_mean")
                    found.append(
                        f"{r['model']} r = {float(r['noise_ratio']):g}: trace ratio "
                        f"{float(r['ratio_mean']):.2f}"
                        + (f" (paper {float(paper):.2f})" if paper else "")
                    )
    return "; ".join(found) or "-"


def results_page(record: dict) -> str:
    """docs/results.md from a paper_times.json record (see :func:`main`)."""

    def seconds(v):
        return "-" if v is None else f"{v:.0f}"

    def rate(v):
        return "-" if v is None else f"{v:,.0f}"

    scale = "tiny (every config's `[tiny]` smoke settings)" if record["tiny"] else "full"
    lines = [
        "# Measured results",
        "",
        "<!-- Generated by bench/paper.py (make paper) from its own measurements; do not edit. -->",
        "",
        f"**Scale: {scale}.** Written by `{record['command']}` on {record['date']}, "
        f"{record['machine']}, into `{record['results']}/`.",
        "",
        "Each row is one figure's shipped config: its `qunlearn run`, `qunlearn compare` and "
        "`qunlearn plot` wall times, and the machine's yardstick measured just before it: "
        "sample-gradients/s of `python bench/bench_qnn_kernel.py "
        f"{' '.join(YARDSTICK)}` (the 10-qubit complex128 QNN training step). Times on shared "
        "machines move 2x between sessions; compare them through the yardstick.",
        "",
        "| figure | run s | compare s | plot s | total s | yardstick (sample-grads/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, f in record["figures"].items():
        t = f["seconds"]
        lines.append(
            f"| `{name}` | {seconds(t.get('run'))} | {seconds(t.get('compare'))} | "
            f"{seconds(t.get('plot'))} | {seconds(sum(t.values()))} | {rate(f['yardstick'])} |"
        )
    if record.get("report_seconds") is not None:
        lines.append(f"| report (all of them) | | | | {seconds(record['report_seconds'])} | |")
    total = record["total_seconds"]
    stopped = "; the run stopped early (a step failed or was interrupted)" * record["partial"]
    lines += ["", f"**Total: {total:.0f} s ({total / 60:.1f} min)**, yardstick excluded{stopped}."]
    lines += ["", "What `qunlearn compare` found:", ""]
    lines += [f"* `{name}`: {f['outcome']}" for name, f in record["figures"].items()]
    lines += [
        "",
        "At tiny scale `qunlearn compare` gives no pass marks (the smoke settings are not the "
        "paper's protocol): this run shows that every step runs end to end, and what it costs. "
        "The full-scale findings, each with its command, are in [Findings](findings.md)."
        if record["tiny"]
        else "The findings behind these runs, each with its command, are in "
        "[Findings](findings.md).",
        "",
    ]
    return "\n".join(lines)


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
    ap.add_argument(
        "--page",
        default="docs/results.md",
        help="the documentation page to write ('' for none; default docs/results.md)",
    )
    ap.add_argument("--no-yardstick", action="store_true", help="do not measure the yardstick")
    ap.add_argument(
        "--page-from",
        metavar="JSON",
        help="run nothing: write --page from this paper_times.json of an earlier run",
    )
    args = ap.parse_args(argv)
    if args.page_from:
        record = json.loads(Path(args.page_from).read_text(encoding="utf-8"))
        Path(args.page).write_text(results_page(record), encoding="utf-8")
        print(f"wrote {args.page}")
        return
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
    figures_record: dict[str, dict] = {}
    partial = True
    try:
        for name, comparable in figures:
            out = str(root / name)
            overrides = precision(name, args.complex64, args.float32)
            tiny = ["--tiny"] if args.tiny else []
            measured = None if args.no_yardstick else yardstick()
            t = {"run": step(["run", name, *overrides, "--out", out, *tiny])}
            if comparable:
                t["compare"] = step(["compare", out])
            t["plot"] = step(["plot", out])
            times[name] = t
            figures_record[name] = {
                "seconds": t,
                "yardstick": measured,
                "outcome": outcome(Path(out)) if comparable else "-",
            }
        report = str(root / "report.html")
        times["report"] = {
            "report": step(["report", *(str(root / n) for n in times), "--out", report])
        }
        partial = False
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
            record = {
                "command": " ".join(["python bench/paper.py", *(argv or sys.argv[1:])]).strip(),
                "tiny": args.tiny,
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d", time.gmtime()),
                "results": str(root),
                "figures": figures_record,
                "report_seconds": times.get("report", {}).get("report"),
                "total_seconds": total,
                "partial": partial,
            }
            root.mkdir(parents=True, exist_ok=True)
            (root / "paper_times.json").write_text(json.dumps(record, indent=1) + "\n")
            if args.page:
                Path(args.page).parent.mkdir(parents=True, exist_ok=True)
                Path(args.page).write_text(results_page(record), encoding="utf-8")
                print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
