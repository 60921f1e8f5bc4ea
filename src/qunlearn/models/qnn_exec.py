"""Execution of a QNN plan (:mod:`qunlearn.models.qnn_plan`): the factor matrices built from the
angles, their real (re, im)-interleaved form, and :func:`_run`, which applies an op list to the
state of one example. Traced by JAX (``grad``, ``jvp``, ``vmap`` all apply).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.models.gates import z_signs


def _realrep(m, real_in):
    """Real R with ``v_out = v_in @ R`` for rows of (re, im)-interleaved states, ψ_out = m ψ_in.

    m: (n_out, n_in) complex. ``real_in``: the input rows hold real amplitudes only (n_in wide).
    """
    a = jnp.swapaxes(m, -1, -2)
    ar, ai = a.real, a.imag
    from_re = jnp.stack([ar, ai], -1)  # [j, i, (re, im) out] from the real part of input j
    if real_in:
        return from_re.reshape(a.shape[0], -1)
    from_im = jnp.stack([-ai, ar], -1)
    return jnp.stack([from_re, from_im], 1).reshape(2 * a.shape[0], -1)


def _factor_matrices(specs, u, theta_zz, cdtype):
    """Complex matrices for factor specs, built batched per width (few ops: fast compiles)."""
    n_rot = u.shape[0] * u.shape[1]
    table = jnp.concatenate([u.reshape(n_rot, 2, 2), jnp.eye(2, dtype=cdtype)[None]])
    zz_flat = jnp.concatenate([theta_zz.reshape(-1), jnp.zeros(1, theta_zz.dtype)])
    out: list[jax.Array | None] = [None] * len(specs)
    for w in sorted({len(sp[0]) for sp in specs}):
        ids = [i for i, sp in enumerate(specs) if len(sp[0]) == w]
        g = table[np.array([specs[i][0] for i in ids])]  # (S, w, 2, 2)
        mat = g[:, 0]
        for k in range(1, w):  # Kronecker product, most significant qubit first
            mat = (mat[:, :, None, :, None] * g[:, k, None, :, None, :]).reshape(
                len(ids), 2 ** (k + 1), 2 ** (k + 1)
            )
        for side in (1, 2):  # row phases (this layer's RZZs), column phases (deferred RZZs)
            n_e = max(len(specs[i][side]) for i in ids)
            if not n_e:
                continue
            z = z_signs(w)
            signs = np.zeros((len(ids), 2**w, n_e))
            sel = np.full((len(ids), n_e), zz_flat.shape[0] - 1)
            for r, i in enumerate(ids):
                for e, (flat, pa, pb) in enumerate(specs[i][side]):
                    signs[r, :, e] = z[:, pa] * z[:, pb]
                    sel[r, e] = flat
            ang = jnp.einsum("sie,se->si", jnp.asarray(signs, zz_flat.dtype), zz_flat[sel])
            ph = jnp.exp(-0.5j * ang).astype(cdtype)
            mat = mat * (ph[:, :, None] if side == 1 else ph[:, None, :])
        for r, i in enumerate(ids):
            out[i] = mat[r]
    return out


def _run(ops, mats, x, rdtype, cdtype):
    """Apply the op list to one example ``x``; ``mats[i]`` is op i's matrix / constant."""
    real = not jnp.iscomplexobj(x)
    if real:
        state = x.astype(rdtype)
    else:
        x = x.astype(cdtype)
        state = jnp.stack([x.real, x.imag], -1).reshape(-1)
    norm2 = jnp.sum(state * state)
    for op, mat in zip(ops, mats, strict=True):
        kind = op[0]
        if kind == "rot":
            state = jnp.swapaxes(state.reshape(2 ** op[1], -1, 1 if real else 2), 0, 1)
            state = state.reshape(-1)
        elif kind == "gemm":
            state = (state.reshape(-1, mat.shape[0]) @ mat).reshape(-1)
            real = False
        elif kind == "phase":  # mat: (2**n, 2) cos, sin per amplitude
            v = state.reshape(-1, 2)
            z = jax.lax.complex(v[:, 0], v[:, 1]) * jax.lax.complex(mat[:, 0], mat[:, 1])
            state = jnp.stack([z.real, z.imag], -1).reshape(-1)
        elif kind == "perm":  # mat: index map in the current bit order
            state = state.reshape(-1, 2)[mat].reshape(-1)
        elif kind == "parity":  # mat: ±1 per amplitude
            v = state.reshape(-1, 2)
            return jnp.sum(mat * (v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1]))
        else:  # tail: ⟨Z_r⟩ = 2‖Qψ‖² − ‖ψ‖²
            y = state.reshape(-1, mat.shape[0]) @ mat
            return 2 * jnp.sum(y * y) - norm2
    raise AssertionError("a plan ends with a readout op")
