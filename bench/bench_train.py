"""Benchmark the training engine (not a test): compile time and steady-state sample-gradients/s.

    python bench/bench_train.py                 # QNN (10 qubits, depth 6) and MLP, batch 256
    python bench/bench_train.py --runs 1 5 50 --repeats 5 --json bench.json
    python bench/bench_train.py --models qnn --runs 1 --program-epochs 10 --dtype complex64

Measures (a) compile time of the full noise-sweep program (100 epochs of Adam inside lax.scan,
5 runs lifted with ``--run-chunk``), (b) the steady-state time of one vmapped value_and_grad step
and, with ``--program-epochs``, (c) ms per run-step inside the real sweep program.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import optax

from qunlearn.experiments import noise_sweep
from qunlearn.models import make_model
from qunlearn.train import supervised_objective


def bench_step(model, runs, batch, dim, repeats, dtype):
    objective = supervised_objective(model)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(objective)(
            params, {"x": x, "y": y, "w": jnp.ones(batch)}, None
        )
        updates, opt_state = optax.adam(1e-3).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    params = jax.vmap(model.init)(keys)
    opt_state = jax.vmap(optax.adam(1e-3).init)(params)
    x = jax.random.normal(jax.random.PRNGKey(1), (runs, batch, dim), dtype)
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    y = (jax.random.uniform(jax.random.PRNGKey(2), (runs, batch)) > 0.5).astype(jnp.float64)
    fn = jax.jit(jax.vmap(step))
    t0 = time.perf_counter()
    compiled = fn.lower(params, opt_state, x, y).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, opt_state, x, y))
    t0 = time.perf_counter()
    for _ in range(repeats):
        params, opt_state, loss = compiled(params, opt_state, x, y)
    jax.block_until_ready(loss)
    step_s = (time.perf_counter() - t0) / repeats
    return {
        "step_compile_s": compile_s,
        "step_ms": 1e3 * step_s,
        "sample_grads_per_s": runs * batch / step_s,
    }


def bench_program_compile(model, runs, n_train, dim, epochs, batch, run_chunk=0):
    program = noise_sweep.sweep_program(
        model, epochs=epochs, batch_size=batch, lr=0.005, n_train=n_train, run_chunk=run_chunk
    )
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    x = jnp.ones((runs, n_train, dim)) / jnp.sqrt(dim)
    y = jnp.zeros((runs, n_train))
    t0 = time.perf_counter()
    program.lower(keys, keys, x, y, x[0], y[0]).compile()
    return time.perf_counter() - t0


def bench_program_step(model, runs, n_train, dim, epochs, batch, run_chunk, repeats):
    """ms per (run, Adam step) inside the real sweep program (scan over epochs and steps, runs
    lifted by ``over_runs``), on random unit-norm inputs; includes the final evaluation."""
    program = noise_sweep.sweep_program(
        model, epochs=epochs, batch_size=batch, lr=0.005, n_train=n_train, run_chunk=run_chunk
    )
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    x = jax.random.normal(jax.random.PRNGKey(1), (runs, n_train, dim))
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    y = (jax.random.uniform(jax.random.PRNGKey(2), (runs, n_train)) > 0.5).astype(x.dtype)
    args = (keys, keys, x, y, x[0], y[0])
    compiled = program.lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    steps = runs * epochs * -(-n_train // batch)
    return 1e3 * min(times) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 5, 50])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["qnn", "mlp"])
    parser.add_argument("--dtype", default="complex128", help="QNN simulation dtype")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--program-epochs",
        type=int,
        default=0,
        help="also time the real sweep program (Fig 2c shapes: 500 examples, "
        "5 runs) for this many epochs and report ms per run-step",
    )
    parser.add_argument(
        "--run-chunk",
        type=int,
        default=1,
        help="run_chunk of that program (1 = one run at a time, as the QNN "
        "configs set on CPU; 0 = all runs vmapped)",
    )
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    rows = []
    for name in args.models:
        hyper = {"depth": 6, "dtype": args.dtype} if name == "qnn" else {"hidden": (64, 16)}
        model = make_model(name, 1024, False, **hyper)
        compile_s = bench_program_compile(model, 5, 500, 1024, 100, args.batch, args.run_chunk)
        print(
            f"{name}: full sweep-program compile (100 epochs, 5 runs): {compile_s:.1f} s",
            flush=True,
        )
        if args.program_epochs:
            ms = bench_program_step(
                model, 5, 500, 1024, args.program_epochs, args.batch, args.run_chunk, args.repeats
            )
            rows.append(
                {
                    "model": name,
                    "runs": 5,
                    "batch": args.batch,
                    "run_chunk": args.run_chunk,
                    "program_ms_per_run_step": ms,
                }
            )
            print(
                f"{name}: sweep program, {args.program_epochs} epochs x 5 runs (run_chunk "
                f"{args.run_chunk}): {ms:.1f} ms per run-step; a 20-cell Fig 2c sweep is "
                f"20 x 5 x 200 run-steps = {20 * 5 * 200 * ms / 6e4:.1f} min",
                flush=True,
            )
        for runs in args.runs:
            r = bench_step(model, runs, args.batch, 1024, args.repeats, jnp.float64)
            r |= {"model": name, "runs": runs, "batch": args.batch, "program_compile_s": compile_s}
            rows.append(r)
            print(
                f"{name} runs={runs:3d} batch={args.batch}: step compile "
                f"{r['step_compile_s']:.1f}"
                f" s, {r['step_ms']:.1f} ms/step, {r['sample_grads_per_s']:.0f} sample-grads/s",
                flush=True,
            )
    meta = {
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "qnn_dtype": args.dtype,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
