"""Wall time of one dense QNN Hessian snapshot as the curvature experiment computes it. Not a test.

The QNN of ``configs/curvature_mnist.toml`` (10 qubits, depth 6, 240 angles of which 135 are in
the readout's light cone) on 700 random unit-norm inputs (the experiment's 350 retain + 150
forget + 200 validation examples) with random 0/1 labels, cut into pieces, three groups (one per
loss): :func:`qunlearn.hessian.grouped_dense_spectra` under ``jit``, first call (with compile)
and steady state, per (piece size, HVPs per call), in complex128 or complex64.

    .venv/bin/python bench/bench_dense_qnn_hessian.py                      # complex128, 50,16
    .venv/bin/python bench/bench_dense_qnn_hessian.py --dtype complex64 --cases 50,16 50,45 50,135

Measured 2026-12-02 on the quiet 2-core CPU (steady wall / process CPU seconds per snapshot):
complex128 piece 50: 16 per call 35.8 / 69.4, 45: 30.3 / 58.6, 135: 31.2 / 60.5; piece 25 x 135:
47.7; piece 10 x 135: 89.7; piece 100 x 45: 26.8; piece 175 x 27: 24.8. complex64 piece 50: 16:
16.6 / 28.9, 45: 14.7 / 25.1, 135: 12.8 / 24.0; piece 100 x 45: 15.1; piece 175 x 27: 14.8.
The experiment's sets (350 / 150 / 200) cut into 50s without padding; larger pieces pad them.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from qunlearn.hessian import grouped_dense_spectra, live_parameters  # noqa: E402
from qunlearn.models import make_model  # noqa: E402
from qunlearn.train import bce, predict  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="complex128", choices=["complex128", "complex64"])
    ap.add_argument("--cases", nargs="+", default=["50,16"], help="PIECE,HVPS_PER_CALL ...")
    ap.add_argument("--examples", type=int, default=700)
    args = ap.parse_args(argv)
    model = make_model("qnn", 1024, False, depth=6, dtype=args.dtype)
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    n = args.examples
    x = rng.normal(size=(n, 1024))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, 2, n).astype(float)
    probe = jnp.asarray(x[:4])
    live = live_parameters(lambda p: jax.vmap(model.apply, (None, 0))(p, probe), params)
    print(f"{args.dtype}: {len(live)} live angles of {params.size}, {n} examples", flush=True)
    for case in args.cases:
        piece, per_call = (int(v) for v in case.split(","))
        m = n // piece
        pieces = {
            "x": jnp.asarray(x[: m * piece].reshape(m, piece, 1024)),
            "y": jnp.asarray(y[: m * piece].reshape(m, piece)),
            "w": jnp.full((m, piece), 1.0 / (n // 2)),
        }
        groups = jnp.asarray(np.minimum(np.arange(m) * 3 // m, 2))

        def piece_loss(p, d):
            return jnp.sum(d["w"] * bce(predict(model, p, d["x"]), d["y"]))

        def spectra(p, pieces=pieces, groups=groups, per_call=per_call):
            return grouped_dense_spectra(
                piece_loss, p, pieces, groups, 3, k=3, live=live, batch_size=per_call
            )

        fn = jax.jit(spectra)
        start = time.perf_counter()
        jax.block_until_ready(fn(params))
        first = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(params))
        steady, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"piece {piece:4d} x {per_call:4d} HVPs per call: first {first:6.1f} s, "
            f"steady {steady:6.1f} s wall / {cpu:6.1f} s CPU",
            flush=True,
        )


if __name__ == "__main__":
    main()
