"""Octree planning (NumPy, outside jit): every static shape of an FMM evaluation.

The tree is a *sparse uniform-depth* octree: the cube enclosing the particles is divided
``depth`` times; only non-empty boxes are stored, in Morton (Z-order) order, at every level.
The depth is chosen by a cost model evaluated on the actual particle distribution (near-
field pair work against far-field translation work), so clustered inputs such as a Plummer
sphere get a deeper tree than uniform ones with the same N.  Leaves are cut into *chunks*
of at most ``leaf_size`` particles; the near field (P2P) is a flat list of (target chunk,
source chunk) pairs for all chunks of the 27 neighbouring leaves, evaluated as dense
``leaf_size × leaf_size`` blocks, so a crowded leaf costs what it holds and no more.

Every array is padded to a "bucketed" length (next value of a geometric sequence with
ratio ≤ 1.125) with a dummy entry at the end, so that nearby configurations give plans of
identical shapes and a jitted evaluation is reused instead of recompiled.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lrnn.fmm.harmonics import M2L_OFFSETS, n_coeffs, octant_m2l_offsets, operators

__all__ = ["FMMPlan", "build_plan", "plan_is_valid", "choose_depth", "MIN_ORDER", "MAX_ORDER"]

#: Range of expansion orders offered (accuracy: see tests/fmm and the benchmark).
MIN_ORDER = 5
MAX_ORDER = 14

_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)],
                       dtype=np.int64)

P2P_GROUP = 8     # source chunks per near-field row
P2P_BLOCK = 16    # near-field rows per tile
CHUNK_BLOCK = 128  # chunks per P2M / L2P tile
M2L_BLOCK = 32    # target boxes per M2L GEMM tile


def _bucket(n: int, quantum: int = 1) -> int:
    """Smallest value >= n of the form q·2^e with q in 8..16 (and a multiple of quantum)."""
    n = max(int(n), 1)
    e = max(0, n.bit_length() - 4)
    step = 1 << e
    v = -(-n // step) * step
    return -(-v // quantum) * quantum


def _spread_slow(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


_SPREAD_LO = _spread_slow(np.arange(1 << 11)).astype(np.int64)


def _spread(v: np.ndarray) -> np.ndarray:
    """Interleave two zero bits after each of the low 21 bits of ``v`` (table lookup)."""
    v = np.asarray(v, dtype=np.int64)
    return _SPREAD_LO[v & 2047] | (_SPREAD_LO[(v >> 11) & 1023] << 33)


def morton(ijk: np.ndarray) -> np.ndarray:
    """Morton key of integer box coordinates ``(..., 3)``: x in bit 0, y in bit 1, z in bit 2."""
    return _spread(ijk[..., 0]) | (_spread(ijk[..., 1]) << 1) | (_spread(ijk[..., 2]) << 2)


def _lookup(keys_sorted: np.ndarray, coords: np.ndarray, side: int):
    """Index of the box at ``coords`` in ``keys_sorted`` (or -1 if absent / out of range)."""
    inside = np.all((coords >= 0) & (coords < side), axis=-1)
    k = morton(np.clip(coords, 0, side - 1))
    pos = np.searchsorted(keys_sorted, k)
    pos = np.minimum(pos, len(keys_sorted) - 1)
    found = inside & (keys_sorted[pos] == k)
    return np.where(found, pos, -1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FMMPlan:
    """Static description of one FMM evaluation (a pytree: arrays are children, the
    integers below are static aux data, so a plan can be passed through ``jit``).

    Arrays (device arrays; ``S = n_chunks · leaf_size`` particle slots):
    ``slot_src`` (S,) original particle index of each slot, ``n`` for an empty slot;
    ``particle_slot`` (n,) slot of each particle; ``chunk_leaf`` (n_chunks,) leaf of each
    chunk; ``leaf_center`` (n_leaves, 3); ``p2p_tgt`` (rows,) target chunk and ``p2p_src``
    (rows, P2P_GROUP) source chunks of each near-field row;
    ``parent[l]`` and ``octant[l]`` per level (parent box index, child octant 0..7);
    ``m2l_tgt[l][o]`` (n, ) target boxes of octant ``o`` and ``m2l_src[l][o]`` (n, 189)
    their interaction lists (dummy index = last row, whose multipole is zero);
    ``ops_m2m`` (K, 8K), ``ops_l2l`` (K, 8K), ``ops_m2l`` (8, 189K, K) translation matrices;
    ``root_lo`` (3,), ``root_size`` () the root cube.
    """

    slot_src: jax.Array
    particle_slot: jax.Array
    chunk_leaf: jax.Array
    leaf_center: jax.Array
    p2p_tgt: jax.Array
    p2p_src: jax.Array
    parent: tuple
    octant: tuple
    m2l_tgt: tuple
    m2l_src: tuple
    ops_m2m: jax.Array
    ops_l2l: jax.Array
    ops_m2l: jax.Array
    root_lo: jax.Array
    root_size: jax.Array
    n: int = dataclasses.field(metadata=dict(static=True))
    order: int = dataclasses.field(metadata=dict(static=True))
    depth: int = dataclasses.field(metadata=dict(static=True))
    leaf_size: int = dataclasses.field(metadata=dict(static=True))
    n_boxes: tuple = dataclasses.field(metadata=dict(static=True))  # padded, per level 0..depth
    tol: float = dataclasses.field(metadata=dict(static=True))

    @property
    def leaf_side(self):
        return self.root_size / (1 << self.depth)

    def summary(self) -> dict:
        return dict(n=self.n, order=self.order, depth=self.depth, leaf_size=self.leaf_size,
                    n_chunks=int(self.chunk_leaf.shape[0]), n_p2p_rows=int(self.p2p_tgt.shape[0]),
                    n_boxes=self.n_boxes,
                    n_m2l=int(sum(s.shape[0] for lvl in self.m2l_src for s in lvl)))


def _level_coords(ijk_leaf, depth, level):
    return ijk_leaf >> (depth - level)


def _depth_cost(ijk_all, depth_max, order, leaf_size):
    """Estimated cost (arbitrary units) of every depth 2..depth_max."""
    K = n_coeffs(order)
    costs = {}
    boxes = {}
    for lvl in range(2, depth_max + 1):
        c = _level_coords(ijk_all, depth_max, lvl)
        keys, first, counts = np.unique(morton(c), return_index=True, return_counts=True)
        boxes[lvl] = len(keys)
        coords = c[first]
        nc = -(-counts // leaf_size)
        nb = _lookup(keys, coords[:, None, :] + _NEIGHBOURS[None], 1 << lvl)
        ncn = np.where(nb >= 0, nc[np.maximum(nb, 0)], 0).sum(1)
        p2p = float((nc * ncn).sum()) * leaf_size * leaf_size
        m2l = sum(boxes[m] for m in range(2, lvl + 1)) * 189.0 * K * K
        # weights calibrated on a 2-core CPU: a near-field pair costs ~40 GEMM multiply-adds
        costs[lvl] = 40.0 * p2p + m2l + 60.0 * len(ijk_all) * K
        best = min(costs, key=costs.get)
        if lvl >= best + 2 and costs[lvl] > 2 * costs[best]:
            break  # well past the optimum (the cost only grows deeper down)
    return costs


def choose_depth(positions: np.ndarray, order: int, leaf_size: int, lo, size) -> int:
    """Depth minimising the cost model on the given particles (at least 2)."""
    n = len(positions)
    # deep enough that the densest leaf is split down to ~leaf_size/4 particles
    depth_max = int(min(20, max(3, math.ceil(math.log(max(n, 8) / 2, 8)) + 6)))
    ijk = np.clip(((positions - lo) / size * (1 << depth_max)).astype(np.int64), 0,
                  (1 << depth_max) - 1)
    costs = _depth_cost(ijk, depth_max, order, leaf_size)
    return min(costs, key=costs.get)


def _check_positions(x):
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 particles, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(f"positions contain NaN/inf (particles {bad[:5].tolist()}...)")


def build_plan(positions, *, order: int = 8, leaf_size: int = 32, depth: int | None = None,
               min_leaf_side: float | None = None, tol: float = 1e-6) -> FMMPlan:
    """Build the octree and every interaction list for ``positions`` (N, 3).

    ``order``: expansion order p (``MIN_ORDER..MAX_ORDER``); ``leaf_size``: chunk capacity;
    ``depth``: force a depth (default: cost model, :func:`choose_depth`);
    ``min_leaf_side``: cap the depth so that leaves are at least this wide (use it when a
    custom near-field kernel differs from 1/r below some distance: every pair closer than
    the leaf side is in the near field); ``tol``: relative slack of the leaf-membership
    check (:func:`plan_is_valid`).
    """
    x = np.asarray(positions, dtype=np.float64)
    _check_positions(x)
    if not (MIN_ORDER <= int(order) <= MAX_ORDER):
        raise ValueError(f"order must be in [{MIN_ORDER}, {MAX_ORDER}], got {order}")
    order = int(order)
    n = x.shape[0]
    lo_, hi_ = x.min(0), x.max(0)
    size = float((hi_ - lo_).max())
    size = size * (1 + 1e-6) + 1e-12 * (1 + np.abs(x).max())
    lo = (lo_ + hi_) / 2 - size / 2
    if depth is None:
        depth = choose_depth(x, order, leaf_size, lo, size)
    if min_leaf_side is not None:
        while depth > 2 and size / (1 << depth) < min_leaf_side:
            depth -= 1
    depth = int(max(2, depth))
    side = 1 << depth
    h = size / side
    ijk = np.clip(np.floor((x - lo) / h).astype(np.int64), 0, side - 1)
    keys = morton(ijk)
    order_idx = np.argsort(keys, kind="stable")
    skeys = keys[order_idx]
    leaf_keys, leaf_start, leaf_count = np.unique(skeys, return_index=True, return_counts=True)
    leaf_coords = ijk[order_idx[leaf_start]]
    n_leaves = len(leaf_keys)
    leaf_of_sorted = np.repeat(np.arange(n_leaves), leaf_count)
    rank = np.arange(n) - leaf_start[leaf_of_sorted]

    # --- chunks -----------------------------------------------------------------------
    C = int(leaf_size)
    nc = -(-leaf_count // C)
    chunk_off = np.concatenate([[0], np.cumsum(nc)])
    n_chunks = int(chunk_off[-1])
    n_chunks_pad = _bucket(n_chunks + 1, CHUNK_BLOCK)
    n_leaves_pad = _bucket(n_leaves + 1)
    chunk_leaf = np.full(n_chunks_pad, n_leaves_pad - 1, dtype=np.int64)
    chunk_leaf[:n_chunks] = np.repeat(np.arange(n_leaves), nc)
    slot_sorted = chunk_off[leaf_of_sorted] * C + rank
    slot_src = np.full(n_chunks_pad * C, n, dtype=np.int64)
    slot_src[slot_sorted] = order_idx
    particle_slot = np.empty(n, dtype=np.int64)
    particle_slot[order_idx] = slot_sorted
    leaf_center = np.zeros((n_leaves_pad, 3))
    leaf_center[:n_leaves] = lo + (leaf_coords + 0.5) * h
    leaf_center[n_leaves:] = lo + 0.5 * size

    # --- near field: chunk pairs of neighbouring leaves -------------------------------------
    nb = _lookup(leaf_keys, leaf_coords[:, None, :] + _NEIGHBOURS[None], side)
    la = np.repeat(np.arange(n_leaves), 27)[nb.reshape(-1) >= 0]
    lb = nb.reshape(-1)[nb.reshape(-1) >= 0]
    cnt = nc[la] * nc[lb]
    start = np.concatenate([[0], np.cumsum(cnt)])[:-1]
    rep = np.repeat(np.arange(len(la)), cnt)
    within = np.arange(int(cnt.sum())) - start[rep]
    ncb = nc[lb][rep]
    p_t = chunk_off[la][rep] + within // ncb
    p_s = chunk_off[lb][rep] + within % ncb
    srt = np.argsort(p_t, kind="stable")
    p_t, p_s = p_t[srt], p_s[srt]
    # group the sources of each target chunk into rows of P2P_GROUP chunks (padded with the
    # dummy chunk): one tile row is a dense leaf_size × (P2P_GROUP·leaf_size) block and the
    # stacked tile outputs are P2P_GROUP times smaller than with one row per chunk pair
    G = P2P_GROUP
    deg = np.bincount(p_t, minlength=n_chunks)
    rows_per = -(-deg // G)
    row_off = np.concatenate([[0], np.cumsum(rows_per)])
    first = np.concatenate([[0], np.cumsum(deg)])[:-1]
    kk = np.arange(len(p_t)) - first[p_t]
    n_rows = int(row_off[-1])
    n_rows_pad = _bucket(n_rows + 1, P2P_BLOCK)
    p2p_tgt = np.full(n_rows_pad, n_chunks_pad - 1, dtype=np.int64)
    p2p_src = np.full((n_rows_pad, G), n_chunks_pad - 1, dtype=np.int64)
    p2p_tgt[:n_rows] = np.repeat(np.arange(n_chunks), rows_per)
    p2p_src[row_off[p_t] + kk // G, kk % G] = p_s
    del p_t, p_s, kk, rep, within, ncb

    # --- levels ---------------------------------------------------------------------------
    lvl_keys = {depth: leaf_keys}
    lvl_coords = {depth: leaf_coords}
    n_boxes = {depth: n_leaves_pad}
    for lvl in range(depth - 1, 1, -1):
        k, first = np.unique(lvl_keys[lvl + 1] >> 3, return_index=True)
        lvl_keys[lvl] = k
        lvl_coords[lvl] = lvl_coords[lvl + 1][first] >> 1
        n_boxes[lvl] = _bucket(len(k) + 1)
    parents, octants = [], []
    for lvl in range(3, depth + 1):  # parent links of level lvl -> lvl-1
        k = lvl_keys[lvl]
        par = np.full(n_boxes[lvl], n_boxes[lvl - 1] - 1, dtype=np.int64)
        par[:len(k)] = np.searchsorted(lvl_keys[lvl - 1], k >> 3)
        octn = np.zeros(n_boxes[lvl], dtype=np.int64)
        octn[:len(k)] = k & 7
        parents.append(par)
        octants.append(octn)
    oct_off = M2L_OFFSETS[octant_m2l_offsets()]  # (8, 189, 3)
    m2l_tgt, m2l_src = [], []
    for lvl in range(2, depth + 1):
        k, cds = lvl_keys[lvl], lvl_coords[lvl]
        dummy = n_boxes[lvl] - 1
        octk = k & 7
        tg, sr = [], []
        for o in range(8):
            t = np.flatnonzero(octk == o)
            npad = _bucket(len(t) + 1, M2L_BLOCK) if len(t) else 0
            tt = np.full(npad, dummy, dtype=np.int64)
            ss = np.full((npad, 189), dummy, dtype=np.int32)
            tt[:len(t)] = t
            for c0 in range(0, len(t), 8192):  # chunks bound the planning memory
                s = _lookup(k, cds[t[c0:c0 + 8192]][:, None, :] + oct_off[o][None], 1 << lvl)
                ss[c0:c0 + len(s)] = np.where(s >= 0, s, dummy)
            tg.append(tt)
            sr.append(ss)
        m2l_tgt.append(tuple(tg))
        m2l_src.append(tuple(sr))

    ops = _device_ops(order)
    i32 = lambda a: jnp.asarray(a.astype(np.int32))  # noqa: E731
    return FMMPlan(
        slot_src=i32(slot_src), particle_slot=i32(particle_slot), chunk_leaf=i32(chunk_leaf),
        leaf_center=jnp.asarray(leaf_center), p2p_tgt=i32(p2p_tgt), p2p_src=i32(p2p_src),
        parent=tuple(i32(a) for a in parents), octant=tuple(i32(a) for a in octants),
        m2l_tgt=tuple(tuple(i32(a) for a in lv) for lv in m2l_tgt),
        m2l_src=tuple(tuple(i32(a) for a in lv) for lv in m2l_src),
        ops_m2m=ops[0], ops_l2l=ops[1], ops_m2l=ops[2],
        root_lo=jnp.asarray(lo), root_size=jnp.asarray(size),
        n=n, order=order, depth=depth, leaf_size=C,
        n_boxes=tuple(n_boxes.get(lvl, 0) for lvl in range(depth + 1)), tol=float(tol))


_DEVICE_OPS: dict = {}


def _device_ops(order):
    key = (order, jax.config.jax_enable_x64)
    if key not in _DEVICE_OPS:
        o = operators(order)
        K = n_coeffs(order)
        # rows of M @ m2m_all are [M @ m2m[0].T, ..., M @ m2m[7].T]
        m2m_all = np.transpose(o["m2m"], (2, 0, 1)).reshape(K, 8 * K)
        l2l_all = np.transpose(o["l2l"], (2, 0, 1)).reshape(K, 8 * K)
        _DEVICE_OPS[key] = (jnp.asarray(m2m_all), jnp.asarray(l2l_all), jnp.asarray(o["m2l_oct"]))
    return _DEVICE_OPS[key]


def plan_is_valid(plan: FMMPlan, positions) -> jax.Array:
    """True iff every particle is still inside its leaf (within ``plan.tol``); jittable, O(N).

    When it is False the plan's interaction lists no longer describe the particles and
    the FMM must be re-planned (:func:`lrnn.fmm.plan`).
    """
    positions = jnp.asarray(positions)
    slot = plan.particle_slot
    leaf = plan.chunk_leaf[slot // plan.leaf_size]
    c = plan.leaf_center[leaf].astype(positions.dtype)
    h = (plan.root_size / (1 << plan.depth)).astype(positions.dtype)
    u = jnp.abs(positions - c) / h
    return jnp.all(u <= 0.5 * (1 + plan.tol) + 1e-12)
