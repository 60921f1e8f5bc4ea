"""Benchmark noisy QNN training steps: exact vs trajectories vs density matrix, per step.

Not a test. One training step = ``jax.jit(value_and_grad)`` of the weighted BCE
(:func:`qunlearn.train.bce`, :func:`qunlearn.train.weighted_mean`) of ``qnn`` (depth 6, readout
the last qubit, sigmoid readout, complex128) on a batch of 64 amplitude-encoded examples, under
one ``circuit_noise`` dict (the values do not change the cost). Simulators:

* ``exact``: the fused noiseless kernel (:func:`qunlearn.models.qnn.qnn_parts`);
* ``trajectories K=16`` / ``K=64``: :mod:`qunlearn.models.noisy_trajectories`, one key per step
  shared by the batch;
* ``density_matrix``: :mod:`qunlearn.models.noisy_dm` (exact).

Each row: compile seconds (first call), ms per step (best of ``repeats`` timed steps, and the
median), or ``skipped`` with the reason (a density matrix that would not fit in memory, or a
first step over :data:`MAX_STEP_S`). :func:`rows` serves the merged cost table of issue 29.

    PYTHONPATH=src .venv/bin/python bench/bench_channels.py --qubits 6 8 10

Measured once (2-core EPYC shared with other jobs, load average ~10: times move ~2x between
runs), best ms per step / first call s:

    qubits  exact        traj K=16     traj K=64     density matrix
    6       23.6 / 5.9   241 / 34      1055 / 37     3.7 / 22
    8       31.6 / 14    716 / 45      3223 / 50     62.6 / 23
    10      31.4 / 12    1304 / 48     5155 / 53     3087 / 28

A trajectory costs about an exact step at batch K x 64 (the kernel runs K x batch states); the
density matrix evolves one observable per step, whatever the batch (10 qubits: batch 64 -> 256
costs 2.14 -> 2.73 s). At 10 qubits it is exact and deterministic at ~2.4x the cost of K = 16
trajectories and ~0.6x that of K = 64, which are noisy estimates (and biased under amplitude
damping, :mod:`qunlearn.models.noisy_trajectories`): the density matrix is the 10-qubit choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # benchmark entry point, as the CLI sets it

import jax.numpy as jnp  # noqa: E402

from qunlearn.models.memory import physical_memory  # noqa: E402
from qunlearn.models.noisy_dm import dm_program  # noqa: E402
from qunlearn.models.noisy_trajectories import trajectory_program  # noqa: E402
from qunlearn.models.qnn import qnn_parts  # noqa: E402
from qunlearn.train import bce, weighted_mean  # noqa: E402

DEPTH, BATCH, SCALE = 6, 64, 5.0
MAX_STEP_S = 60.0
NOISE = {
    "depolarizing_1q": 0.001,
    "depolarizing_2q": 0.01,
    "amplitude_damping": 0.002,
    "phase_damping": 0.002,
    "readout_p01": 0.02,
    "readout_p10": 0.03,
}


def _data(n: int):
    key = jax.random.PRNGKey(n)
    x = jax.random.normal(key, (BATCH, 2**n))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = (jax.random.uniform(jax.random.fold_in(key, 1), (BATCH,)) < 0.5).astype(jnp.float64)
    params = 0.5 * jax.random.normal(jax.random.fold_in(key, 2), (DEPTH, n, 4))
    return params, x, y, jnp.ones(BATCH)


def _steps(n: int):
    """name -> (step(params, x, y, w, key) -> (loss, grad), a memory floor in bytes or None)."""
    r = n - 1
    exact = qnn_parts(2**n, False, depth=DEPTH, scale=SCALE).expectation

    def from_z(expectation_batch):
        def loss(params, x, y, w, key):
            z = expectation_batch(params, x, key)
            return weighted_mean(bce(jax.nn.sigmoid(SCALE * z), y), w)

        return jax.jit(jax.value_and_grad(loss))

    out = {"exact": (from_z(lambda p, x, k: jax.vmap(exact, (None, 0))(p, x)), None)}
    for k in (16, 64):
        values = trajectory_program("qnn", n, DEPTH, r, NOISE, "complex128", k)
        out[f"trajectories K={k}"] = (
            from_z(
                lambda p, x, key, v=values: jnp.mean(jax.vmap(v, (None, None, 0))(key, p, x), 1)
            ),
            None,
        )
    dm = dm_program("qnn", n, DEPTH, r, NOISE, "complex128")
    # the evolved observable is a 4**n complex128 tensor; autodiff keeps about one per ring edge
    out["density_matrix"] = (
        from_z(lambda p, x, k: jax.vmap(dm, (None, 0))(p, x)),
        16 * 4**n * 2 * DEPTH * n,
    )
    return out


def rows(n_qubits: int, repeats: int = 3, only: list[str] | None = None) -> list[dict]:
    """The cost table's rows for ``n_qubits``: one dict per simulator (those named in ``only``,
    default all)."""
    params, x, y, w = _data(n_qubits)
    memory = physical_memory()
    table = []
    for name, (step, floor) in _steps(n_qubits).items():
        if only and name not in only:
            continue
        row = {"simulator": name, "n_qubits": n_qubits, "depth": DEPTH, "batch": BATCH}
        if floor is not None and memory is not None and floor > memory / 2:
            row["skipped"] = (
                f"needs ~{floor / 2**30:.1f} GiB, over half of {memory / 2**30:.0f} GiB"
            )
            table.append(row)
            continue
        key = jax.random.PRNGKey(0)
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, x, y, w, key))
        first = time.perf_counter() - t0
        if first > MAX_STEP_S:
            row["skipped"] = f"first step (compile + run) took {first:.0f} s > {MAX_STEP_S:.0f} s"
            table.append(row)
            continue
        times = []
        for i in range(repeats):
            key = jax.random.PRNGKey(i + 1)
            t0 = time.perf_counter()
            jax.block_until_ready(step(params, x, y, w, key))
            times.append(time.perf_counter() - t0)
        row.update(
            first_call_s=round(first, 2),
            ms_per_step=round(1e3 * min(times), 1),
            median_ms=round(1e3 * statistics.median(times), 1),
        )
        table.append(row)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qubits", type=int, nargs="+", default=[6, 8, 10])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="+", help='simulators to run, e.g. exact "trajectories K=16"')
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    out = []
    print(f"{'n':>3} {'simulator':<20} {'first call s':>12} {'ms/step':>9} {'median':>9}")
    for n in args.qubits:
        for row in rows(n, args.repeats, args.only):
            out.append(row)
            if "skipped" in row:
                print(f"{n:>3} {row['simulator']:<20} skipped: {row['skipped']}")
            else:
                print(
                    f"{n:>3} {row['simulator']:<20} {row['first_call_s']:>12} "
                    f"{row['ms_per_step']:>9} {row['median_ms']:>9}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
