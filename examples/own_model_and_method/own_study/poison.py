"""A noise kind of my own: an alpha share of each class gets another random training image, its
label kept (or flipped as well, ``flip_too``). The images are unit vectors, so a swapped row is
still a valid amplitude-encoded state."""

import jax
import jax.numpy as jnp

from qunlearn.noise import flip_labels


def swap_images(key, x, y, alpha, *, flip_too=False):
    """(x', y', mask): qunlearn calls it inside ``jax.vmap`` over the runs' keys, with x (N, D)
    and y (N,) as JAX arrays; ``mask`` marks every row it changed."""
    _, flipped, mask = flip_labels(key, x, y, alpha)  # which rows: alpha of each class
    rows = jax.random.permutation(jax.random.fold_in(key, 1), x.shape[0])
    return jnp.where(mask[:, None], x[rows], x), (flipped if flip_too else y), mask
