#!/usr/bin/env bash
# ONE prepared check for a GPU machine (<= 8 min in all; not run on the 2-core CPU):
#   1. QNN training-step throughput, 10 qubits, depth 6, batch 256, runs 1 / 5 / 50 / 500,
#      complex64 and complex128 (bench/bench_qnn.py's "runs" section, our kernel, runs vmapped);
#   2. the wall time of Fig 2c (configs/fig2c_mnist.toml unchanged: run_chunk by backend, 0 on a GPU).
# Usage, from the repository root, with a CUDA JAX installed (pip install -e ".[gpu]"):
#   bash bench/gpu_check.sh [OUTDIR]        # default OUTDIR = results/gpu_check
# Writes OUTDIR/bench_qnn.json, OUTDIR/bench_qnn.txt, OUTDIR/fig2c.txt and the Fig 2c results.
# Each part has its own time limit, so a slow part cannot eat the other's budget.
set -u
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-results/gpu_check}
mkdir -p "$OUT"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$PY" -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"
} | tee "$OUT/device.txt"

# 1. throughput: <= 4 min (compiles 8 programs; 500 runs x 256 x 1024 amplitudes ~ 2 GB a state)
timeout 240 "$PY" bench/bench_qnn.py --sections runs --qubits-runs 10 --depth 6 --batch 256 \
  --runs 1 5 50 500 --dtypes complex64 complex128 --repeats 3 --min-time 0.5 \
  --json "$OUT/bench_qnn.json" 2>&1 | tee "$OUT/bench_qnn.txt"
echo "bench_qnn exit status: ${PIPESTATUS[0]} (124 = timed out)"

# 2. Fig 2c wall time: <= 3.5 min (a fresh directory, so nothing is reused)
rm -rf "$OUT/fig2c_mnist"
start=$(date +%s.%N)
timeout 210 "$PY" -m qunlearn run configs/fig2c_mnist.toml --out "$OUT/fig2c_mnist" --quiet \
  2>&1 | tail -5
status=${PIPESTATUS[0]}
end=$(date +%s.%N)
echo "fig2c wall $("$PY" -c "print(f'{$end - $start:.1f}')") s, exit status $status" \
  "(124 = timed out)" | tee "$OUT/fig2c.txt"
