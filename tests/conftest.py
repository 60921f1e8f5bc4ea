"""Session set-up: float64/complex128 JAX, as the entry points set it; a private dataset cache and
a shared XLA compilation cache for the whole run. Nothing else is global.

* No test reads or writes the user's ``~/.cache``: ``QUNLEARN_CACHE`` points at a directory of
  this run (subprocesses inherit it); MNIST is converted there once per worker from the pinned
  package.
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
