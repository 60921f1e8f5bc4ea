"""Benchmark the unlearning methods' cost at Fig 3a's sizes, and the heavy parts on their own.

Not a test. On the MNIST 1 vs 9 data (reference encoding: 500 training samples, 150 flipped at
alpha = 0.3, 1024 features), for the MLP [16, 4] and the 10-qubit depth-6 QNN, each method's
unlearning program (the one the evaluation kind runs, ``--runs`` runs in one vmap, the configs'
``unlearn_*`` settings) is compiled once and timed (best of ``--repeats`` calls); the table gives
compile s, run s and run time relative to ``retrain``. Then the heavy parts alone, at the same
sizes: the Newton step against its CG iterations (its cost is linear in ``cg_steps``) and SSD's
two Fisher diagonals (per-example gradients over D and D_f, chunked).

    .venv/bin/python bench/bench_methods.py                       # MLP and QNN, every method
    .venv/bin/python bench/bench_methods.py --models mlp --runs 32
    .venv/bin/python bench/bench_methods.py --methods retrain newton ssd --complex64
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)  # benchmark entry point, as the CLI sets it

import jax.numpy as jnp  # noqa: E402

from qunlearn.data import load_dataset  # noqa: E402
from qunlearn.experiments.unlearning_setup import unlearning_program  # noqa: E402
from qunlearn.models import make_model  # noqa: E402
from qunlearn.noise import flip_labels  # noqa: E402
from qunlearn.unlearn import METHODS, make_method, make_split, make_unlearn  # noqa: E402

# the unlearning settings of configs/benchmark_mnist.toml
SETTINGS = {
    "mlp": {"hyper": {"hidden": [16, 4]}, "epochs": 50, "batch_size": 0, "lr": 0.001},
    "qnn": {"hyper": {"depth": 6}, "epochs": 50, "batch_size": 256, "lr": 0.005},
}


def timed(fn, *args, repeats: int = 2) -> tuple[float, float]:
    """(seconds of the first call, best of ``repeats`` more) of ``fn(*args)``."""
    times = []
    for _ in range(1 + repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "qnn"], choices=list(SETTINGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--complex64", action="store_true", help="the QNN in complex64")
    args = parser.parse_args()

    data = load_dataset("mnist", encoding="reference")
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    _, y_noisy, mask = flip_labels(jax.random.PRNGKey(0), x, y, 0.3)
    n_forget = int(mask.sum())
    shared = {
        "x_train": x,
        "y_true": y,
        "x_val": jnp.asarray(data.x_val),
        "y_val": jnp.asarray(data.y_val),
    }
    keys = jax.random.split(jax.random.PRNGKey(1), args.runs * 2).reshape(args.runs, 2, -1)
    print(f"MNIST: {len(y)} samples, {n_forget} flipped, {x.shape[1]} features; {args.runs} runs")
    for name in args.models:
        s = SETTINGS[name]
        hyper = dict(s["hyper"])
        if name == "qnn" and args.complex64:
            hyper |= {"dtype": "complex64", "readout_dtype": "float64"}
        model = make_model(name, x.shape[1], False, **hyper)
        teacher = model.init(jax.random.PRNGKey(2))
        print(f"\n{name} {hyper}: unlearn_epochs {s['epochs']}, batch {s['batch_size'] or 'all'}")
        print(f"{'method':20s} {'compile s':>10s} {'run s':>8s} {'x retrain':>10s}")
        base = None
        for method_name in args.methods:
            method = make_method(
                method_name,
                model,
                n_retain=len(y) - n_forget,
                n_forget=n_forget,
                epochs=s["epochs"],
                batch_size=s["batch_size"],
            )
            program = unlearning_program(
                model,
                method,
                lr=s["lr"],
                epochs=s["epochs"],
                n_forget=n_forget,
                shared_teacher=True,
                trajectory=False,
            )
            starts = jax.vmap(method.start, in_axes=(0, None))(keys[:, 0], teacher)
            weights = {k: jnp.full((args.runs,), v) for k, v in method.weights.items()}

            first, run = timed(
                program,
                *(keys[:, 1], starts, teacher, y_noisy, mask, weights, shared),
                repeats=args.repeats,
            )
            base = run if method_name == "retrain" else base
            ratio = f"{run / base:10.2f}" if base else f"{'-':>10s}"
            print(f"{method_name:20s} {first - run:10.1f} {run:8.2f} {ratio}")

        split = make_split(x, y, y_noisy, mask, shared["x_val"], shared["y_val"], n_forget=n_forget)
        print("heavy parts, one run:")
        for cg_steps in (8, 32, 128):
            method = make_method(
                "newton",
                model,
                n_retain=len(y) - n_forget,
                n_forget=n_forget,
                epochs=1,
                batch_size=0,
                cg_steps=cg_steps,
            )
            fn = jax.jit(make_unlearn(model, method, lr=0.0, epochs=1, trajectory=False))
            _, seconds = timed(fn, keys[0, 1], teacher, teacher, split, {})
            print(f"  newton, cg_steps {cg_steps:4d} (Gauss-Newton on D_r): {seconds:7.3f} s")
        method = make_method(
            "ssd", model, n_retain=len(y) - n_forget, n_forget=n_forget, epochs=1, batch_size=0
        )
        fn = jax.jit(make_unlearn(model, method, lr=0.0, epochs=1, trajectory=False))
        _, seconds = timed(fn, keys[0, 1], teacher, teacher, split, {})
        print(f"  ssd: Fisher of D ({len(y)}) and D_f ({n_forget}), chunks of 64: {seconds:.3f} s")


if __name__ == "__main__":
    main()
