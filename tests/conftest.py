"""Session set-up: float64/complex128 JAX, as the entry points set it. Nothing else is global."""

import jax

jax.config.update("jax_enable_x64", True)
