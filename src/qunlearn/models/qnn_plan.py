"""Planning of the fused QNN simulator (numpy / Python, at model build time).

Which gates of a layer fuse into which GEMM (ring segments of at most :data:`GEMM_MAX` qubits),
the light cone of the readout, RZZ edges folded into GEMM rows or deferred into later columns,
the bit-order rotations between GEMMs, and the static description of each GEMM's factor. The
design and its measurements are in :mod:`qunlearn.models.qnn`; :mod:`qunlearn.models.qnn_exec`
applies a plan to one example.

A plan is a list of ops on the state of one example, whose bit order is always a rotation of the
ring, (e+1, ..., e) with e the least significant qubit:

* ``("rot", m)``: move the m most significant qubits to the end (e += m);
* ``("gemm", layer, seg, deferred)``: the layer's gates on seg (the trailing qubits, in this
  order): rotations in the light cone, RZZs inside seg, and the deferred RZZs ((layer, edge)
  pairs) of earlier layers, applied first;
* ``("phase", items)``: an elementwise RZZ pass for (layer, edge) items;
* ``("tail", layer, seg, deferred)``: fold layers layer..depth-1 into ⟨Z_r⟩ on the trailing seg;
* ``("perm", layer)``: the CNOT ring (qnn_cnot);
* ``("parity",)``: ⟨Z_r⟩ after a final CNOT ring, as a ±1-weighted sum (qnn_cnot).

Edge j is the ring pair (j, j+1 mod n).
"""

from __future__ import annotations

from typing import Any

import numpy as np

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

# One op of a plan: a tuple whose first item names its kind (see the module docstring).
Op = tuple[Any, ...]
Piece = tuple[int, int]  # (start, size): a segment of ring-adjacent qubits
LayerEdge = tuple[int, int]  # (layer, edge j): one RZZ gate
# One way to apply a layer: (cost, pieces in apply order, their qubit sets, RZZ edges left over)
LayerOption = tuple[float, tuple[Piece, ...], list[frozenset[int]], frozenset[int]]
# Planner states: (last qubit, deferred RZZs) -> (cost, ops) of the cheapest way there
Frontier = dict[tuple[int, frozenset[LayerEdge]], tuple[float, list[Op]]]


def _tail_cost(w):
    return _GEMM_COST[w] if w == 1 else 0.5 * (_GEMM_COST[w] + _GEMM_COST[w - 1])


def _segment(start: int, size: int, n: int) -> tuple[int, ...]:
    return tuple((start + i) % n for i in range(size))


def _seg_end(seg: Piece, n: int) -> int:
    return (seg[0] + seg[1] - 1) % n


def _ring_dist(a, b, n):
    d = abs(a - b) % n
    return min(d, n - d)


def _edge(j, n):
    return frozenset({j, (j + 1) % n})


def _light_cone(n: int, depth: int, readout: int) -> list[tuple[frozenset[int], frozenset[int]]]:
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


def _covers(qubits: frozenset[int], n: int, max_size: int) -> list[Piece]:
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


def _piece_plans(qubits: frozenset[int], n: int) -> list[tuple[Piece, ...]]:
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

    def rot(e_from: int, e_to: int) -> list[Op]:
        m = (e_to - e_from) % n
        return [("rot", m)] if m else []

    def layer_options(layer: int) -> list[LayerOption]:
        qubits, edges = cones[layer]
        out: list[LayerOption] = []
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
            ops: list[Op] = [("phase", left)] if left else []
            ops += [*r, ("tail", layer, _segment(*seg, n), folded)]
            cost = _PHASE_COST * bool(left) + rot_cost * len(r) + _tail_cost(seg[1]) + store_cost
            yield cost, ops

    def steps(layer: int, e: int, deferred, rot_cost: float, options: list[LayerOption]):
        for cost0, pieces, sets, split in options:
            folded: list[list[LayerEdge]] = [[] for _ in pieces]
            left: list[LayerEdge] = []
            carry: list[LayerEdge] = []
            for d in sorted(deferred):
                ed = _edge(d[1], n)
                hit = next((i for i, s in enumerate(sets) if s & ed), None)
                if hit is None:  # no gate of this layer touches it: keep deferring
                    carry.append(d)
                elif ed <= sets[hit]:
                    folded[hit].append(d)
                else:
                    left.append(d)
            ops: list[Op] = [("phase", tuple(left))] if left else []
            cost, cur = cost0 + _PHASE_COST * bool(left), e
            for i, p in enumerate(pieces):
                r = rot(cur, _seg_end(p, n))
                if i == 0:
                    cost += rot_cost * len(r)
                ops += [*r, ("gemm", layer, _segment(*p, n), tuple(folded[i]))]
                cur = _seg_end(p, n)
            nxt = frozenset((layer, j) for j in split) | frozenset(carry)
            yield cost, ops, cur, nxt

    states: Frontier = {(n - 1, frozenset()): (0.0, [])}
    finals: list[tuple[float, list[Op]]] = []
    for layer in range(depth):
        rot_cost = _INPUT_ROT_COST if layer == 0 else _ROT_COST
        options = layer_options(layer) if layer < depth - 1 else []
        nxt: Frontier = {}
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
    ops: list[Op] = []
    e = n - 1
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


def _readout_rows(seg, readout):
    w = len(seg)
    bit = w - 1 - seg.index(readout)
    return np.array([i for i in range(2**w) if not (i >> bit) & 1])
