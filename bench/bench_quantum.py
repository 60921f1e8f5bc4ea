"""The cost table of real quantum conditions (issue 29): one training step of the paper's QNN
(depth 6, batch 64, complex128) at each qubit count, under every way qunlearn can simulate it:

* exact autodiff on the fused state-vector kernel (today's path);
* parameter shift with S = 100 and S = 1000 shots per shifted circuit, SPSA (S = 1000), and the
  2P shifted forward passes alone (:mod:`bench.bench_gradients`);
* circuit noise: Monte Carlo trajectories K = 16 and 64, and the exact density matrix
  (:mod:`bench.bench_channels`).

Not a test: it measures. One command, one run, one table:

    .venv/bin/python bench/bench_quantum.py                  # 6, 8, 10 qubits
    .venv/bin/python bench/bench_quantum.py --qubits 6 --json /tmp/quantum_cost.json

Each row: best ms per step over ``--repeats`` calls after a first (compiling) call, and the ratio
to the exact step at the same width.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # the two benchmarks beside this file

import jax  # noqa: E402

import bench_channels  # noqa: E402
import bench_gradients  # noqa: E402


def table(n_qubits: int, repeats: int) -> list[dict]:
    """One row per way of computing a training step at ``n_qubits``: name, ms/step, first call."""
    out = []
    for r in bench_gradients.rows(n_qubits, repeats=repeats):
        shots = f" S={r['shots']}" if r["shots"] else ""
        name = {"2P_forwards": "2P shifted forwards"}.get(r["method"], r["method"]) + shots
        out.append(
            {
                "n_qubits": n_qubits,
                "step": name,
                "ms_per_step": r["ms_per_step"],
                "compile_s": r["compile_s"],
            }
        )
    noisy = ["trajectories K=16", "trajectories K=64", "density_matrix"]
    for r in bench_channels.rows(n_qubits, repeats, noisy):
        row = {"n_qubits": n_qubits, "step": r["simulator"]}
        if "skipped" in r:
            row["skipped"] = r["skipped"]
        else:
            row |= {"ms_per_step": r["ms_per_step"], "compile_s": r["first_call_s"]}
        out.append(row)
    exact = next(r["ms_per_step"] for r in out if r["step"] == "exact")
    for r in out:
        if "ms_per_step" in r:
            r["vs_exact"] = r["ms_per_step"] / exact
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    print(f"depth 6, batch 64, complex128, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    print(
        f"{'qubits':>6} {'training step':<28} {'ms/step':>10} {'x exact':>8} {'first call s':>12}"
    )
    rows = []
    for n in args.qubits:
        for r in table(n, args.repeats):
            rows.append(r)
            if "skipped" in r:
                print(f"{n:>6} {r['step']:<28} skipped: {r['skipped']}")
                continue
            print(
                f"{n:>6} {r['step']:<28} {r['ms_per_step']:>10.1f} {r['vs_exact']:>8.1f} "
                f"{r['compile_s']:>12.1f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
