"""Quantum neural networks simulated as exact state vectors, built for fast training steps on CPU.

Conventions follow tensorcircuit-ng: qubit 0 is the most significant bit of a basis index,
``rx(t) = exp(-i t X / 2)``, ``ry(t) = exp(-i t Y / 2)``, ``rzz(t) = exp(-i t Z⊗Z / 2)``.
``tests/test_qnn.py`` proves outputs, gradients and Hessian-vector products equal a plain
gate-by-gate tensorcircuit-ng build of the same circuit.

A gate-by-gate circuit compiles in minutes on a 2-core CPU and runs each gate as a small,
memory-bound op. Here a layer is one or two GEMMs. The design, each part measured with
``bench/bench_qnn_kernel.py`` on the 2-core AVX2 EPYC this project targets (10 qubits, depth 6,
batch 256, complex128: 132 -> 25 ms per value_and_grad step):

* **Ring segments as real GEMMs.** One example's state is stored as real numbers, (re, im)
  interleaved (the bytes of a complex vector). The rotations on a *segment* of w ring-adjacent
  qubits whose bits are the trailing ones of the current bit order are one GEMM,
  ``state.reshape(-1, 2·2**w) @ R``, R the real (2·2**w)² form of the complex 2**w matrix;
  vmapped over a batch, one tall GEMM. XLA's float64 GEMMs run ~2.5x faster than its complex128
  ones here, and real arithmetic keeps conjugates and complex transposes out of the backward pass.
* **Rotating bit orders, never transposing back.** A segment is made trailing by a cyclic rotation
  of the bit order (one block transpose) and the state stays in that order, so the next GEMM acts
  on a segment that is already trailing: a two-segment layer costs one transpose.
* **Light cone.** ⟨Z_r⟩ = ⟨ψ|V† Z_r V|ψ⟩ is unchanged by the last layer's RZZ ring (diagonal,
  commutes with Z_r) and by its rotations on qubits other than r (V†V = 1 there). One layer back
  the observable's support grows by a qubit on each side of the ring: in layer ``depth-1-k`` only
  rotations within ring distance k of r and RZZ edges touching distance ≤ k-1 matter. The other
  gates are skipped; their angles get exactly zero gradient (tensorcircuit: ~1e-17).
* **Tail observable.** Once the light cone fits one segment S (≤ 7 qubits), the remaining layers
  are folded into one unitary U on S and ⟨Z_r⟩ = 2‖Qψ‖² − ‖ψ‖², Q the half of U's rows whose bit r
  is 0: one GEMM with half-width output instead of a GEMM per layer.
* **RZZ phases inside GEMMs.** RZZs on edges inside a segment scale the rows of its matrix. An edge
  split between two segments is *deferred*: a diagonal phase commutes with everything up to the
  next gate on its qubits, so it scales the columns of the next segment that holds both of them.
  A dynamic program over (bit order, deferred edges) chooses every layer's segments to minimise a
  cost model of measured GEMM, transpose, phase-pass and stored-state costs (``_GEMM_COST`` ...);
  an elementwise phase pass is the fallback (never needed for ≤ 16 qubits, depth ≤ 12).
* **CNOT ring** (``qnn_cnot``): one gather in the current bit order per layer; the last layer's
  ring is folded into the readout as the ±1 signs ``z_r(perm⁻¹(i))``.

Measured and rejected: a custom VJP (un-computing states with inverse layers) would break
forward-over-reverse Hessians (``jax.jvp`` of ``jax.grad``, used by :mod:`qunlearn.hessian`) and
needs more GEMMs than autodiff here (un-compute + adjoint + gradient vs adjoint + gradient); a
custom JVP that reorders the weight-gradient GEMM is normalised away by XLA; ``jax.checkpoint`` did
not shrink XLA's temporaries; phase passes written with ``reverse`` or ``stack`` of (re, im) are
5-7x slower in XLA's backward than the complex multiply used here; per-amplitude ``cos``/``sin``
must not fuse into the batch loop (XLA recomputes them per example), so the 2**m distinct phases
are expanded by a one-hot GEMM, which XLA materialises once. Everything is plain JAX (no custom
derivative rules): ``grad``, ``jvp``, ``hessian`` and ``vmap`` over examples and runs all work.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qunlearn.errors import QunlearnError

DTYPES = {"complex128": (jnp.complex128, jnp.float64), "complex64": (jnp.complex64, jnp.float32)}


def rx(t):
    """(..., 2, 2) matrices exp(-i t X / 2)."""
    c, s = jnp.cos(t / 2), jnp.sin(t / 2)
    return jnp.stack([jnp.stack([c + 0j, -1j * s], -1), jnp.stack([-1j * s, c + 0j], -1)], -2)


def ry(t):
    """(..., 2, 2) matrices exp(-i t Y / 2)."""
    c, s = jnp.cos(t / 2), jnp.sin(t / 2)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2).astype(rx(t).dtype)


def z_signs(n_qubits: int) -> np.ndarray:
    """(2**n, n) array of z_q = ±1 for every basis index (qubit 0 = most significant bit)."""
    bits = (np.arange(2**n_qubits)[:, None] >> (n_qubits - 1 - np.arange(n_qubits))[None, :]) & 1
    return 1 - 2 * bits


def ring_pairs(n_qubits: int) -> list[tuple[int, int]]:
    return [(i, (i + 1) % n_qubits) for i in range(n_qubits)]


def cnot_ring_permutation(n_qubits: int) -> np.ndarray:
    """Index map ``perm`` with (CNOT_{L-1→0} ... CNOT_{0→1} ψ)[j] = ψ[perm[j]]."""
    idx = np.arange(2**n_qubits)
    gates = ring_pairs(n_qubits)
    perm = idx.copy()
    for control, target in reversed(gates):  # ψ_k[j] = ψ_{k-1}[g_k(j)], so compose from the end
        cbit = (perm >> (n_qubits - 1 - control)) & 1
        perm = perm ^ (cbit << (n_qubits - 1 - target))
    return perm


def _qubits_for(input_dim: int, n_qubits: int | None) -> int:
    n = int(round(math.log2(input_dim))) if input_dim > 0 else -1
    if input_dim <= 0 or 2**n != input_dim:
        raise QunlearnError(
            f"QNN input must have 2**n_qubits amplitudes, got dimension {input_dim}: "
            "amplitude-encode (pad) the data to a power of two"
        )
    if n_qubits is not None and n_qubits != n:
        raise QunlearnError(
            f"n_qubits={n_qubits} does not match the data dimension {input_dim} = 2**{n}: "
            f"set n_qubits={n} or leave it out"
        )
    return n


def _check(depth: int, dtype: str):
    if depth <= 0:
        raise QunlearnError(f"QNN depth must be a positive integer, got {depth}")
    if dtype not in DTYPES:
        raise QunlearnError(f"unknown QNN dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


READOUTS = ("sigmoid", "linear")


def _readout(readout: str, scale: float):
    """⟨Z⟩ -> probability. ``"sigmoid"``: sigmoid(scale·⟨Z⟩) (protocol §3). ``"linear"``:
    (1 + ⟨Z⟩) / 2, the reference code's earlier readout (left commented out in its ``models.py``
    next to the sigmoid marked "Newly added"); ``scale`` is unused there."""
    if readout == "sigmoid":
        return lambda z: jax.nn.sigmoid(scale * z)
    if readout == "linear":
        return lambda z: 0.5 + 0.5 * z
    raise QunlearnError(f"unknown QNN readout {readout!r}: choose one of {', '.join(READOUTS)}")


# ------------------------------------------------------------------------------------------------
# Planning (numpy / Python, at model build time).
#
# A plan is a list of ops on the state of one example, whose bit order is always a rotation of the
# ring, (e+1, ..., e) with e the least significant qubit:
#   ("rot", m)                      move the m most significant qubits to the end (e += m);
#   ("gemm", layer, seg, deferred)  the layer's gates on seg (the trailing qubits, in this order):
#                                   rotations in the light cone, RZZs inside seg, and the deferred
#                                   RZZs ((layer, edge) pairs) of earlier layers, applied first;
#   ("phase", items)                an elementwise RZZ pass for (layer, edge) items;
#   ("tail", layer, seg, deferred)  fold layers layer..depth-1 into ⟨Z_r⟩ on the trailing seg;
#   ("perm", layer)                 the CNOT ring (qnn_cnot);
#   ("parity",)                     ⟨Z_r⟩ after a final CNOT ring, as a ±1-weighted sum (qnn_cnot).
# Edge j is the ring pair (j, j+1 mod n).

GEMM_MAX = 6  # widest segment applied inside the circuit (a 128x128 real matrix)
TAIL_MAX = 7  # widest segment the folded last layers may act on
_PAD_MAX = 2  # identity qubits a segment may extend past the light cone, per side
# Cost model: fwd+bwd milliseconds per op for a float64 batch of 256 states of 10 qubits, measured
# on the target 2-core EPYC. Small GEMMs are dominated by their memory passes, hence the offset.
_GEMM_COST = {1: 2.9, 2: 3.1, 3: 4.2, 4: 5.2, 5: 7.1, 6: 12.0, 7: 22.6}
_ROT_COST = 0.6
_INPUT_ROT_COST = 1.5  # a rotated copy of the input is one more stored activation
_PHASE_COST = 4.4
# Each GEMM's input is kept for the backward pass. In a whole complex128 training step those
# states (4 MB each at batch 256) overflow the caches and, past ~32 MB of temporaries, glibc
# mmaps XLA's temp buffer afresh every step: one stored state measured ~1 ms there, which makes
# fewer, wider GEMMs pay (25 vs 41 ms/step for 10 qubits, depth 6). In complex64 the step fits
# in cache and the plain costs win (16 vs 18 ms).
_STORE_COST = {"complex128": 1.0, "complex64": 0.0}


def _tail_cost(w):
    return _GEMM_COST[w] if w == 1 else 0.5 * (_GEMM_COST[w] + _GEMM_COST[w - 1])


def _segment(start, size, n):
    return tuple((start + i) % n for i in range(size))


def _seg_end(seg, n):
    return (seg[0] + seg[1] - 1) % n


def _ring_dist(a, b, n):
    d = abs(a - b) % n
    return min(d, n - d)


def _edge(j, n):
    return frozenset({j, (j + 1) % n})


def _light_cone(n, depth, readout):
    """Per layer: (qubits whose rotations can change ⟨Z_r⟩, RZZ edges that can)."""
    cones = []
    for layer in range(depth):
        k = depth - 1 - layer
        qubits = frozenset(q for q in range(n) if _ring_dist(q, readout, n) <= k)
        near = {q for q in range(n) if _ring_dist(q, readout, n) <= k - 1}
        edges = frozenset(j for j in range(n) if _edge(j, n) & near)
        cones.append((qubits, edges))
    return cones


def _first_qubit(qubits, n):
    """Start of the ring segment ``qubits`` (a proper subset of the ring)."""
    return next(q for q in sorted(qubits) if (q - 1) % n not in qubits)


def _covers(qubits, n, max_size):
    """(start, size) segments containing ``qubits`` (a ring segment or the whole ring)."""
    if len(qubits) == n:
        return [(s, n) for s in range(n)] if n <= max_size else []
    a = _first_qubit(qubits, n)
    return [
        ((a - p1) % n, len(qubits) + p1 + p2)
        for p1 in range(_PAD_MAX + 1)
        for p2 in range(_PAD_MAX + 1)
        if len(qubits) + p1 + p2 <= min(n, max_size)
    ]


def _compositions(total, k, cap):
    if k == 1:
        return [(total,)] if 1 <= total <= cap else []
    return [
        (first, *rest)
        for first in range(1, min(cap, total - k + 1) + 1)
        for rest in _compositions(total - first, k - 1, cap)
    ]


def _piece_plans(qubits, n):
    """Ways to cover ``qubits`` with disjoint segments: tuples of (start, size), in apply order."""
    full = len(qubits) == n
    if full:
        covers = [(s, n) for s in range(n)]
    else:
        a = _first_qubit(qubits, n)
        covers = [
            ((a - p1) % n, len(qubits) + p1 + p2)
            for p1 in range(_PAD_MAX + 1)
            for p2 in range(_PAD_MAX + 1)
            if len(qubits) + p1 + p2 < n
        ]
    plans = set()
    for start, size in covers:
        kmin = max(-(-size // GEMM_MAX), 2 if full else 1)
        for k in (1, 2) if kmin == 1 else (kmin,):  # a narrow window: one piece, or two
            for sizes in _compositions(size, k, GEMM_MAX):
                if max(sizes) - min(sizes) > (2 if k <= 2 else 1):  # near-balanced splits only
                    continue
                pieces, s = [], start
                for w in sizes:
                    pieces.append((s % n, w))
                    s += w
                for first in range(k):
                    for last in range(k):
                        if k > 1 and first == last:
                            continue
                        mid = [p for i, p in enumerate(pieces) if i not in (first, last)]
                        plans.add((pieces[first], *mid, *([pieces[last]] if k > 1 else [])))
    return sorted(plans)


def _hea_plan(n, depth, readout, store_cost=0.0, beam=32):
    """Cheapest op list (by the cost model) computing ⟨Z_r⟩ of the HEA circuit on its light cone.

    Dynamic programming over layers whose state is (current last qubit e, deferred RZZ edges),
    keeping the ``beam`` cheapest states per layer: as cheap as an exhaustive search for every
    ring of ≤ 12 qubits and depth ≤ 10 (checked), and bounded time for wide rings, whose
    full-ring layers can be cut in many ways (20 qubits, depth 30: ~1 s).
    """
    cones = _light_cone(n, depth, readout)

    def rot(e_from, e_to):
        m = (e_to - e_from) % n
        return [("rot", m)] if m else []

    def layer_options(layer):
        qubits, edges = cones[layer]
        out = []
        for pieces in _piece_plans(qubits, n):
            sets = [frozenset(_segment(*p, n)) for p in pieces]
            split = frozenset(j for j in edges if not any(_edge(j, n) <= s for s in sets))
            cost = sum(_GEMM_COST[p[1]] + store_cost for p in pieces)
            out.append((cost + _ROT_COST * (len(pieces) - 1), pieces, sets, split))
        return out

    def tails(layer, e, deferred, rot_cost):
        qubits = cones[layer][0]
        dq = frozenset().union(*[_edge(j, n) for _, j in deferred])
        for seg in sorted(
            set(_covers(qubits | dq, n, TAIL_MAX)) | set(_covers(qubits, n, TAIL_MAX))
        ):
            seg_set = frozenset(_segment(*seg, n))
            folded = tuple(sorted(d for d in deferred if _edge(d[1], n) <= seg_set))
            left = tuple(sorted(set(deferred) - set(folded)))
            r = rot(e, _seg_end(seg, n))
            ops = [("phase", left)] if left else []
            ops += [*r, ("tail", layer, _segment(*seg, n), folded)]
            cost = _PHASE_COST * bool(left) + rot_cost * len(r) + _tail_cost(seg[1]) + store_cost
            yield cost, ops

    def steps(layer, e, deferred, rot_cost, options):
        for cost0, pieces, sets, split in options:
            folded = [[] for _ in pieces]
            left, carry = [], []
            for d in sorted(deferred):
                ed = _edge(d[1], n)
                hit = next((i for i, s in enumerate(sets) if s & ed), None)
                if hit is None:  # no gate of this layer touches it: keep deferring
                    carry.append(d)
                elif ed <= sets[hit]:
                    folded[hit].append(d)
                else:
                    left.append(d)
            ops = [("phase", tuple(left))] if left else []
            cost, cur = cost0 + _PHASE_COST * bool(left), e
            for i, p in enumerate(pieces):
                r = rot(cur, _seg_end(p, n))
                if i == 0:
                    cost += rot_cost * len(r)
                ops += [*r, ("gemm", layer, _segment(*p, n), tuple(folded[i]))]
                cur = _seg_end(p, n)
            nxt = frozenset((layer, j) for j in split) | frozenset(carry)
            yield cost, ops, cur, nxt

    states = {(n - 1, frozenset()): (0.0, [])}
    finals = []
    for layer in range(depth):
        rot_cost = _INPUT_ROT_COST if layer == 0 else _ROT_COST
        options = layer_options(layer) if layer < depth - 1 else []
        nxt = {}
        for (e, deferred), (cost, ops) in states.items():
            finals += [(cost + c, ops + o) for c, o in tails(layer, e, deferred, rot_cost)]
            for c, o, e2, d2 in steps(layer, e, deferred, rot_cost, options):
                if (e2, d2) not in nxt or cost + c < nxt[e2, d2][0]:
                    nxt[e2, d2] = (cost + c, ops + o)
        ranked = sorted(nxt.items(), key=lambda kv: (kv[1][0], kv[0][0], sorted(kv[0][1])))
        states = dict(ranked[:beam])
    return min(finals, key=lambda f: f[0])[1]


def _cnot_plan(n, depth):
    """Every layer: the ring cut into ceil(n / GEMM_MAX) near-equal segments, the first one ending
    at the current last qubit, then the CNOT ring (folded into the readout after the last layer)."""
    k = -(-n // GEMM_MAX)
    sizes = [n // k + (i < n % k) for i in range(k)]
    ops, e = [], n - 1
    for layer in range(depth):
        for i, w in enumerate(sizes):
            if i:
                ops.append(("rot", w))
                e = (e + w) % n
            ops.append(("gemm", layer, _segment(e - w + 1, w, n), ()))
        ops.append(("perm", layer) if layer < depth - 1 else ("parity",))
    return ops


def _orders(ops, n):
    """The bit order (qubits, most significant first) each op sees."""
    order, out = tuple(range(n)), []
    for op in ops:
        out.append(order)
        if op[0] == "rot":
            order = order[op[1] :] + order[: op[1]]
    return out


def _index_map(order):
    """natural[j]: the natural-order basis index of index j in ``order``."""
    n = len(order)
    bits = (np.arange(2**n)[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1
    return (bits << (n - 1 - np.asarray(order))[None, :]).sum(1)


# ------------------------------------------------------------------------------------------------
# Execution.


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


def _factor_spec(n, depth, layer, seg, qubits, edges, deferred):
    """Static description of one layer's gates restricted to seg, as a 2**w matrix:
    (rotation table index per position, row-phase edges, column-phase edges). Table index
    ``depth * n`` is the identity; phase edges are (flat θ index, position a, position b)."""
    pos = {q: i for i, q in enumerate(seg)}
    rot = tuple(layer * n + q if q in qubits else depth * n for q in seg)
    row = tuple(
        (layer * n + j, pos[j], pos[(j + 1) % n]) for j in sorted(edges) if _edge(j, n) <= set(seg)
    )
    col = tuple((lay * n + j, pos[j], pos[(j + 1) % n]) for lay, j in deferred)
    return rot, row, col


def _factor_matrices(specs, u, theta_zz, cdtype):
    """Complex matrices for factor specs, built batched per width (few ops: fast compiles)."""
    n_rot = u.shape[0] * u.shape[1]
    table = jnp.concatenate([u.reshape(n_rot, 2, 2), jnp.eye(2, dtype=cdtype)[None]])
    zz_flat = jnp.concatenate([theta_zz.reshape(-1), jnp.zeros(1, theta_zz.dtype)])
    out = [None] * len(specs)
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


def _readout_rows(seg, readout):
    w = len(seg)
    bit = w - 1 - seg.index(readout)
    return np.array([i for i in range(2**w) if not (i >> bit) & 1])


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


def qnn(
    input_dim: int,
    complex_input: bool,
    *,
    depth: int = 6,
    n_qubits: int | None = None,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
    readout: str = "sigmoid",
):
    """Hardware-efficient ansatz of the study (protocol §3).

    Layer: Rx(θ0) Ry(θ1) Rx(θ2) on every qubit, then RZZ(θ3) on ring pairs (i, i+1 mod L).
    Params: (depth, L, 4), init N(0, init_std²). Output p = sigmoid(scale·⟨Z_readout⟩), or
    (1 + ⟨Z⟩) / 2 with ``readout="linear"``.

    The input's amplitudes are used as given, never renormalised, as the reference's simulator
    did: ⟨Z⟩ here is ⟨x|U†ZU|x⟩, so ⟨Z⟩(c·x) = c²·⟨Z⟩(x) (tested). With the reference MNIST
    encoding (‖x‖² = number of non-blank columns) the readout is sigmoid(scale·‖x‖²·⟨Z⟩_unit).
    """
    del complex_input  # real inputs are treated as complex amplitudes with zero imaginary part
    n = _qubits_for(input_dim, n_qubits)
    cdtype, rdtype = _check(depth, dtype)
    to_prob = _readout(readout, scale)
    readout = readout_qubit % n
    cones = _light_cone(n, depth, readout)
    ops = _hea_plan(n, depth, readout, _STORE_COST[dtype])
    consts = {}
    for i, (op, order) in enumerate(zip(ops, _orders(ops, n), strict=True)):
        if op[0] == "phase":  # which sign pattern of the edges' z_a z_b each amplitude has
            z = z_signs(n)
            pos = {q: k for k, q in enumerate(order)}
            pattern = np.zeros(2**n, np.int64)
            for t, (_, j) in enumerate(op[1]):
                pattern |= (z[:, pos[j]] * z[:, pos[(j + 1) % n]] < 0).astype(np.int64) << t
            signs = 1 - 2 * ((np.arange(2 ** len(op[1]))[:, None] >> np.arange(len(op[1]))) & 1)
            consts[i] = (np.eye(2 ** len(op[1]))[pattern], signs)

    def init(key):
        return init_std * jax.random.normal(key, (depth, n, 4), rdtype)

    specs, uses = [], []  # factor specs; per op: None, a factor index, or a list (tail)
    for op in ops:
        if op[0] == "gemm":
            _, layer, seg, deferred = op
            uses.append(len(specs))
            specs.append(_factor_spec(n, depth, layer, seg, *cones[layer], deferred))
        elif op[0] == "tail":
            _, layer0, seg, deferred = op
            uses.append(list(range(len(specs), len(specs) + depth - layer0)))
            for lay in range(layer0, depth):  # deferred RZZs go first, into the first factor
                specs.append(
                    _factor_spec(n, depth, lay, seg, *cones[lay], deferred if lay == layer0 else ())
                )
        else:
            uses.append(None)

    def apply(params, x):
        theta = params.astype(rdtype)
        u = (rx(theta[..., 2]) @ ry(theta[..., 1]) @ rx(theta[..., 0])).astype(cdtype)
        # all matrices depend on the params only: computed once per call, outside the batch
        factors = _factor_matrices(specs, u, theta[..., 3], cdtype)
        mats, real = [], not jnp.iscomplexobj(x)
        for i, (op, use) in enumerate(zip(ops, uses, strict=True)):
            kind = op[0]
            if kind == "gemm":
                mats.append(_realrep(factors[use], real).astype(rdtype))
                real = False
            elif kind == "phase":
                onehot, signs = consts[i]
                items = op[1]
                ang = (
                    -0.5
                    * jnp.asarray(signs, rdtype)
                    @ theta[np.array([lay for lay, _ in items]), np.array([j for _, j in items]), 3]
                )
                # expand the 2**m distinct phases with a GEMM: XLA materialises them once
                # instead of fusing (and recomputing) cos/sin into every example's loop
                mats.append(
                    jnp.asarray(onehot, rdtype) @ jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
                )
            elif kind == "tail":
                mat = factors[use[0]]
                for f in use[1:]:
                    mat = factors[f] @ mat
                mats.append(_realrep(mat[_readout_rows(op[2], readout)], real).astype(rdtype))
            else:
                mats.append(None)
        return to_prob(_run(ops, mats, x, rdtype, cdtype))

    return init, apply


def qnn_cnot(
    input_dim: int,
    complex_input: bool,
    *,
    depth: int = 5,
    n_qubits: int | None = None,
    readout_qubit: int = -1,
    scale: float = 5.0,
    dtype: str = "complex128",
    init_std: float = 0.01,
    readout: str = "sigmoid",
):
    """The Hessian study's circuit (protocol §5): per layer Rx(θ0), Ry(θ1) on every qubit, then a
    CNOT ring i → i+1 mod L. Params: (depth, L, 2). ``readout`` as for :func:`qnn`."""
    del complex_input
    n = _qubits_for(input_dim, n_qubits)
    cdtype, rdtype = _check(depth, dtype)
    to_prob = _readout(readout, scale)
    readout = readout_qubit % n
    ops = _cnot_plan(n, depth)
    perm = cnot_ring_permutation(n)
    consts = {}
    for i, (op, order) in enumerate(zip(ops, _orders(ops, n), strict=True)):
        if op[0] == "perm":  # ψ'[j] = ψ[perm[j]] in natural indices, mapped to this order
            natural = _index_map(order)
            consts[i] = jnp.asarray(np.argsort(natural)[perm[natural]])
        elif op[0] == "parity":  # ⟨ψ'|Z_r|ψ'⟩ = Σ_i z_r(perm⁻¹[i]) |ψ_i|²
            z_r = z_signs(n)[:, readout]
            consts[i] = jnp.asarray(z_r[np.argsort(perm)][_index_map(order)], rdtype)

    def init(key):
        return init_std * jax.random.normal(key, (depth, n, 2), rdtype)

    specs, uses = [], []
    for op in ops:
        uses.append(len(specs) if op[0] == "gemm" else None)
        if op[0] == "gemm":
            specs.append((tuple(op[1] * n + q for q in op[2]), (), ()))

    def apply(params, x):
        theta = params.astype(rdtype)
        u = (ry(theta[..., 1]) @ rx(theta[..., 0])).astype(cdtype)
        factors = _factor_matrices(specs, u, theta[..., 0], cdtype)
        mats, real = [], not jnp.iscomplexobj(x)
        for i, (op, use) in enumerate(zip(ops, uses, strict=True)):
            if op[0] == "gemm":
                mats.append(_realrep(factors[use], real).astype(rdtype))
                real = False
            else:
                mats.append(consts.get(i))
        return to_prob(_run(ops, mats, x, rdtype, cdtype))

    return init, apply
