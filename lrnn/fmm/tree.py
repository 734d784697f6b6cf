"""Octree planning (NumPy, outside jit): every static shape of an FMM evaluation.

The tree is *adaptive*: the cube enclosing the particles is split recursively, a box being
split while it holds more than ``max_leaf`` particles, so a clustered input (a Plummer
sphere) gets deep leaves in its core and shallow ones in its halo at the same cost per
particle as a uniform one.  The tree is then *2:1 balanced* (no leaf touches a box two or
more levels finer), which bounds every list and lets all far-field work use the same
operators as a uniform tree:

* **U list** (near field, P2P): the leaves touching a leaf, at levels l-1, l, l+1;
* **V list** (M2L): same-level boxes that do not touch, whose parents touch (≤ 189);
* **W/X lists** (a leaf a at level l and the children w of a split neighbour that do not
  touch a): a gets *virtual children* at level l+1 that hold its particles' P2M and L2P;
  at level l+1 they take part in the M2L with real boxes only, and only with those that
  do not touch a.  Every pair of particles is thus counted exactly once: in the near field
  if their leaves touch, else by one M2L at the coarsest level where their boxes are apart.

Only non-empty boxes are stored, in Morton (Z-order) order, at every level.  Leaves are
cut into *chunks* of at most ``leaf_size`` particles; the near field is a flat list of
(target chunk, source chunk) pairs evaluated as dense ``leaf_size × leaf_size`` blocks;
P2M and L2P run on chunks of :data:`E_CHUNK` particles of the box that holds the
expansion (a leaf or its virtual child).

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

__all__ = ["FMMPlan", "build_plan", "plan_is_valid", "MIN_ORDER", "MAX_ORDER"]

#: Range of expansion orders offered (accuracy: see tests/fmm and the benchmark).
MIN_ORDER = 5
MAX_ORDER = 14

_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)],
                       dtype=np.int64)

P2P_GROUP = 8     # source chunks per near-field row
P2P_BLOCK = 16    # near-field rows per tile
CHUNK_BLOCK = 128  # chunks per P2M / L2P tile
M2L_MIN_TILE, M2L_MAX_TILE = 16, 64  # M2L pairs per GEMM tile (time flat within 16..128
#                                      at p = 5, 12, 14 on 1e4-1e5 Plummer inputs)
E_CHUNK = 16      # particles per P2M / L2P chunk
#: Default split threshold: max(MAX_LEAF_FACTOR · leaf_size, MAX_LEAF_PER_COEFF · (p+1)²):
#: the M2L work per box grows like (p+1)⁴ and the near-field work per box like its
#: population squared, so higher orders want fuller leaves (measured on uniform and Plummer
#: inputs, experiments/results/fmm).
MAX_LEAF_FACTOR = 4
MAX_LEAF_PER_COEFF = 3
_FINE = 21        # particles are located on a 2^21 grid per axis (Morton keys < 2^63)


def _bucket(n: int, quantum: int = 1) -> int:
    """Smallest value >= n of the form q·2^e with q in 8..16 (and a multiple of quantum)."""
    n = max(int(n), 1)
    e = max(0, n.bit_length() - 4)
    step = 1 << e
    v = -(-n // step) * step
    return -(-v // quantum) * quantum


def _size(need: int, floor: int = 0, quantum: int = 1, headroom: float = 0.0) -> int:
    """Padded size for ``need`` entries: the bucket of ``need·(1 + headroom)``, or, given a
    previous plan's size ``floor``, that size while it fits and a bucket with 25 % headroom
    when it does not (capacities only grow: re-plans along a trajectory rarely change shapes)."""
    if not floor:
        return _bucket(math.ceil(need * (1 + headroom)), quantum)
    return floor if need <= floor else _bucket(-(-5 * need // 4), quantum)


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

    Boxes of every level are numbered in one global index (level ``l`` occupies rows
    ``box_offset[l] : box_offset[l] + n_boxes[l]``; the last row of each level is a dummy
    box whose expansions stay zero).  Arrays (device arrays):

    * near field, ``S = n_chunks · leaf_size`` slots: ``slot_src`` (S,) original particle
      of each slot (``n`` = empty); ``particle_slot`` (n,); ``p2p_tgt`` (rows,) target chunk
      and ``p2p_src`` (rows, P2P_GROUP) source chunks of each near-field row;
    * expansions, ``Se = n_echunks · E_CHUNK`` slots (chunks of the boxes that hold P2M and
      L2P): ``eslot_src`` (Se,), ``particle_eslot`` (n,), ``echunk_box`` (n_echunks,) global
      box of each chunk; ``box_center`` (boxes, 3) and ``box_level`` (boxes,);
    * tree: ``parent[l]`` and ``octant[l]`` (level-local parent index and child octant) for
      levels 3..depth; the M2L pairs of every level as tiles of one offset each:
      ``m2l_tgt``, ``m2l_src`` (tiles, P) global target and source boxes and ``m2l_op``
      (tiles,) the offset number (dummy-padded);
    * ``ops_m2m`` (K, 8K), ``ops_l2l`` (K, 8K), ``ops_m2l`` (316, K, K) translation matrices
      (``ops_m2l[d]`` acts on rows: ``L_rows += M_rows @ ops_m2l[d]``);
      ``root_lo`` (3,), ``root_size`` () the root cube.
    """

    slot_src: jax.Array
    particle_slot: jax.Array
    p2p_tgt: jax.Array
    p2p_src: jax.Array
    eslot_src: jax.Array
    particle_eslot: jax.Array
    echunk_box: jax.Array
    box_center: jax.Array
    box_level: jax.Array
    parent: tuple
    octant: tuple
    m2l_tgt: jax.Array
    m2l_src: jax.Array
    m2l_op: jax.Array
    ops_m2m: jax.Array
    ops_l2l: jax.Array
    ops_m2l: jax.Array
    root_lo: jax.Array
    root_size: jax.Array
    n_virtual: jax.Array  # () number of virtual boxes (diagnostics)
    n: int = dataclasses.field(metadata=dict(static=True))
    order: int = dataclasses.field(metadata=dict(static=True))
    depth: int = dataclasses.field(metadata=dict(static=True))
    leaf_size: int = dataclasses.field(metadata=dict(static=True))
    n_boxes: tuple = dataclasses.field(metadata=dict(static=True))  # padded, per level 0..depth
    box_offset: tuple = dataclasses.field(metadata=dict(static=True))  # per level 0..depth
    tol: float = dataclasses.field(metadata=dict(static=True))

    @property
    def leaf_side(self):
        """Side of the smallest box (every pair closer than this is in the near field)."""
        return self.root_size / (1 << self.depth)

    def box_side(self, box, dtype=None):
        """Side of the boxes ``box`` (global indices): root_size · 2^-level (jittable)."""
        dtype = dtype or self.root_size.dtype
        return self.root_size.astype(dtype) * jnp.exp2(-self.box_level[box].astype(dtype))

    def particle_box(self, i: int):
        """(centre (3,), side) of the box whose expansions serve particle ``i`` (NumPy)."""
        b = int(self.echunk_box[int(self.particle_eslot[i]) // E_CHUNK])
        return np.asarray(self.box_center[b]), float(self.box_side(b))

    def summary(self) -> dict:
        return dict(n=self.n, order=self.order, depth=self.depth, leaf_size=self.leaf_size,
                    n_chunks=int(self.slot_src.shape[0] // self.leaf_size),
                    n_p2p_rows=int(self.p2p_tgt.shape[0]), n_boxes=self.n_boxes,
                    n_m2l_tiles=int(self.m2l_src.shape[0]), m2l_tile=int(self.m2l_src.shape[1]),
                    n_m2l_pairs=int(np.sum(np.asarray(self.m2l_src) != len(self.box_level) - 1)),
                    n_echunks=int(self.echunk_box.shape[0]), n_virtual=int(self.n_virtual))


def _runs(k: np.ndarray):
    """Distinct values of the sorted array ``k``, their first positions and counts."""
    if len(k) == 0:
        return k, np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[first, len(k)])
    return k[first], first, counts


def _adjacent(a, la, b, lb):
    """Boxes ``a`` (coords at level la) and ``b`` (level lb ≥ la) touch or overlap."""
    s = lb - la
    lo = (a << s) - 1
    hi = ((a + 1) << s)
    return np.all((b >= lo) & (b <= hi), axis=-1)


class _Tree:
    """Adaptive octree in NumPy: per level the sorted Morton keys, coords and leaf flags."""

    def __init__(self, fk, fijk, fine):
        self.fk, self.fijk, self.F = fk, fijk, fine
        self.keys, self.coords, self.leaf = {}, {}, {}

    def pkeys(self, level):
        return self.fk >> (3 * (self.F - level))

    def add(self, level, keys, coords, leaf):
        if level in self.keys:
            keys = np.concatenate([self.keys[level], keys])
            coords = np.concatenate([self.coords[level], coords])
            leaf = np.concatenate([self.leaf[level], leaf])
        o = np.argsort(keys, kind="stable")
        self.keys[level], self.coords[level], self.leaf[level] = keys[o], coords[o], leaf[o]

    def grow(self, cap, max_leaf):
        """Split every box holding more than ``max_leaf`` particles, down to level ``cap``."""
        active = np.ones(len(self.fk), bool)
        for lvl in range(2, cap + 1):
            idx = np.flatnonzero(active)
            keys, first, counts = _runs(self.pkeys(lvl)[idx])
            leaf = (counts <= max_leaf) | (lvl == cap)
            self.add(lvl, keys, self.fijk[idx[first]] >> (self.F - lvl), leaf)
            active[idx] = ~np.repeat(leaf, counts)
            if not active.any():
                break

    def split(self, level, which):
        """Turn the leaves ``which`` (indices at ``level``) into parents of their children."""
        self.leaf[level][which] = False
        pk = self.pkeys(level)
        pos = np.searchsorted(self.keys[level][which], pk)
        pos = np.minimum(pos, len(which) - 1)
        sel = np.flatnonzero(self.keys[level][which][pos] == pk)
        keys, first, _ = _runs(self.pkeys(level + 1)[sel])
        self.add(level + 1, keys, self.fijk[sel[first]] >> (self.F - level - 1),
                 np.ones(len(keys), bool))

    def balance(self):
        """2:1 balance: no leaf touches a box two or more levels finer than itself.

        For every box at level l, each neighbour region of its parent (level l-1) must not
        lie inside a leaf of level ≤ l-2; such leaves are split (deepest level first, so one
        sweep suffices: splits only create boxes at coarser levels than the one checked).
        """
        nb26 = _NEIGHBOURS[np.any(_NEIGHBOURS != 0, axis=1)]
        for lvl in range(max(self.keys), 3, -1):
            while True:
                pk, first, _ = _runs(self.keys[lvl] >> 3)
                pc = self.coords[lvl][first] >> 1
                X = (pc[:, None, :] + nb26[None]).reshape(-1, 3)
                X = X[np.all((X >= 0) & (X < (1 << (lvl - 1))), axis=1)]
                X = X[np.unique(morton(X), return_index=True)[1]]
                changed = False
                for m in range(lvl - 2, 1, -1):
                    pos = _lookup(self.keys[m], X >> (lvl - 1 - m), 1 << m)
                    hit = pos >= 0
                    hit[hit] = self.leaf[m][pos[hit]]
                    if hit.any():
                        self.split(m, np.unique(pos[hit]))
                        changed = True
                if not changed:
                    break


def _level_boxes(tree, virt_keys, virt_coords, lvl):
    """Real and virtual boxes of one level, merged in Morton order."""
    keys = np.concatenate([tree.keys.get(lvl, np.zeros(0, np.int64)), virt_keys])
    coords = np.concatenate([tree.coords.get(lvl, np.zeros((0, 3), np.int64)), virt_coords])
    virt = np.r_[np.zeros(len(keys) - len(virt_keys), bool), np.ones(len(virt_keys), bool)]
    o = np.argsort(keys, kind="stable")
    return keys[o], coords[o], virt[o]


def _chunks(owner_runs_counts, cap):
    """Chunk layout of consecutive runs (sorted items, e.g. particles of one box): chunks per
    run, first chunk of each run (and the total at the end), slot of every item."""
    nc = -(-owner_runs_counts // cap)
    off = np.concatenate([[0], np.cumsum(nc)])
    run = np.repeat(np.arange(len(nc)), owner_runs_counts)
    start = np.concatenate([[0], np.cumsum(owner_runs_counts)])[:-1]
    rank = np.arange(int(owner_runs_counts.sum())) - start[run]
    return nc, off, off[run] * cap + rank


def _check_positions(x):
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 particles, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(f"positions contain NaN/inf (particles {bad[:5].tolist()}...)")


def build_plan(positions, *, order: int = 8, leaf_size: int = 32, max_leaf: int | None = None,
               depth: int | None = None, min_leaf_side: float | None = None,
               tol: float = 1e-6, like: FMMPlan | None = None, headroom: float = 0.0) -> FMMPlan:
    """Build the adaptive octree and every interaction list for ``positions`` (N, 3).

    ``order``: expansion order p (``MIN_ORDER..MAX_ORDER``); ``leaf_size``: near-field chunk
    capacity; ``max_leaf``: a box holding more particles is split (default
    ``max(MAX_LEAF_FACTOR·leaf_size, MAX_LEAF_PER_COEFF·(order+1)²)``); ``depth``: instead, a uniform tree of exactly
    this depth; ``min_leaf_side``: no box smaller than this (use it when a custom
    near-field kernel differs from 1/r below some distance: every pair closer than the
    smallest box side is in the near field); ``tol``: relative slack of the box-membership
    check (:func:`plan_is_valid`); ``like``: a previous plan whose padded sizes are floors for
    this one (same depth, order and leaf size), so that re-planning along a trajectory keeps
    the array shapes and the jitted evaluation does not recompile (capacities only grow);
    ``headroom``: relative padding of a plan made without ``like``.

    The tree (see the module docstring): boxes with more than ``max_leaf`` particles are
    split; the tree is 2:1 balanced; a leaf that touches a split box of its own level gets
    *virtual children* at the next level, which carry its P2M/L2P and take part in that
    level's M2L with real boxes only (the W- and X-list interactions of an adaptive FMM,
    done with the ordinary same-level M2L operators).
    """
    x = np.asarray(positions, dtype=np.float64)
    _check_positions(x)
    if not (MIN_ORDER <= int(order) <= MAX_ORDER):
        raise ValueError(f"order must be in [{MIN_ORDER}, {MAX_ORDER}], got {order}")
    if int(leaf_size) < 1 or (max_leaf is not None and int(max_leaf) < 1):
        raise ValueError(f"leaf_size and max_leaf must be positive, got {leaf_size}, {max_leaf}")
    order, C = int(order), int(leaf_size)
    n = x.shape[0]
    lo_, hi_ = x.min(0), x.max(0)
    size = float((hi_ - lo_).max())
    size = size * (1 + 1e-6) + 1e-12 * (1 + np.abs(x).max())
    lo = (lo_ + hi_) / 2 - size / 2
    F = _FINE
    cap = F if depth is None else max(2, min(F, int(depth)))
    if min_leaf_side is not None:
        while cap > 2 and size / (1 << cap) < min_leaf_side:
            cap -= 1
    if depth is not None:
        max_leaf = 0
    elif max_leaf is None:
        max_leaf = max(MAX_LEAF_FACTOR * C, MAX_LEAF_PER_COEFF * n_coeffs(order))
    max_leaf = int(max_leaf)
    fijk = np.clip(np.floor((x - lo) / size * (1 << F)).astype(np.int64), 0, (1 << F) - 1)
    fkey = morton(fijk)
    order_idx = np.argsort(fkey, kind="stable")
    tree = _Tree(fkey[order_idx], fijk[order_idx], F)
    tree.grow(cap, max_leaf)
    tree.balance()
    depth = max(tree.keys)
    levels = range(2, depth + 1)
    if like is not None and (like.depth, like.order, like.leaf_size) != (depth, order, C):
        like = None
    floor = (lambda name, k=1: 0) if like is None else (lambda name, k=1: getattr(like, name).shape[0] // k)

    # --- leaves, and which of them need virtual children ------------------------------
    leaf_level = np.zeros(n, np.int64)  # per sorted particle
    leaf_pos = np.zeros(n, np.int64)
    need_virtual = {}
    for lvl in levels:
        pk = tree.pkeys(lvl)
        pos = np.minimum(np.searchsorted(tree.keys[lvl], pk), len(tree.keys[lvl]) - 1)
        isleaf = (tree.keys[lvl][pos] == pk) & tree.leaf[lvl][pos]
        leaf_level[isleaf], leaf_pos[isleaf] = lvl, pos[isleaf]
        internal = ~tree.leaf[lvl]
        nbp = _lookup(tree.keys[lvl], tree.coords[lvl][:, None, :] + _NEIGHBOURS[None], 1 << lvl)
        has_int = np.any((nbp >= 0) & internal[np.maximum(nbp, 0)], axis=1)
        need_virtual[lvl] = tree.leaf[lvl] & has_int
    assert not need_virtual[depth].any(), "a deepest-level leaf cannot touch a split box"
    virt_keys = {lvl: np.zeros(0, np.int64) for lvl in levels}
    virt_coords = {lvl: np.zeros((0, 3), np.int64) for lvl in levels}
    ebox_level = leaf_level.copy()
    for lvl in range(2, depth):
        sel = np.flatnonzero(leaf_level == lvl)
        sel = sel[need_virtual[lvl][leaf_pos[sel]]]
        keys, first, _ = _runs(tree.pkeys(lvl + 1)[sel])
        virt_keys[lvl + 1] = keys
        virt_coords[lvl + 1] = tree.fijk[sel[first]] >> (F - lvl - 1)
        ebox_level[sel] = lvl + 1

    # --- all boxes (real + virtual) per level; global numbering -----------------------------
    bkeys, bcoords, bvirt, n_boxes, box_offset = {}, {}, {}, {}, {}
    off = 0
    for lvl in levels:
        bkeys[lvl], bcoords[lvl], bvirt[lvl] = _level_boxes(tree, virt_keys[lvl],
                                                            virt_coords[lvl], lvl)
        n_boxes[lvl] = _size(len(bkeys[lvl]) + 1, like.n_boxes[lvl] if like else 0, 1, headroom)
        box_offset[lvl] = off
        off += n_boxes[lvl]
    n_total = off
    box_center = np.tile(lo + 0.5 * size, (n_total, 1))
    box_level = np.zeros(n_total, np.int64)
    for lvl in levels:
        o, m = box_offset[lvl], len(bkeys[lvl])
        box_center[o:o + m] = lo + (bcoords[lvl] + 0.5) * (size / (1 << lvl))
        box_level[o:o + n_boxes[lvl]] = lvl

    # --- expansion chunks: particles grouped by the box that holds their P2M / L2P ----------
    ebox = np.zeros(n, np.int64)
    for lvl in levels:
        sel = ebox_level == lvl
        ebox[sel] = box_offset[lvl] + np.searchsorted(bkeys[lvl], tree.pkeys(lvl)[sel])
    eb, _, ecount = _runs(ebox)  # particles are in Morton order: each box is one run
    nec, _, eslot_sorted = _chunks(ecount, E_CHUNK)
    n_ech = int(nec.sum())
    n_ech_pad = _size(n_ech + 1, floor("echunk_box"), CHUNK_BLOCK, headroom)
    echunk_box = np.full(n_ech_pad, n_total - 1, np.int64)
    echunk_box[:n_ech] = np.repeat(eb, nec)
    eslot_src = np.full(n_ech_pad * E_CHUNK, n, np.int64)
    eslot_src[eslot_sorted] = order_idx
    particle_eslot = np.empty(n, np.int64)
    particle_eslot[order_idx] = eslot_sorted

    # --- near field: chunks of leaves, U lists (touching leaves, levels l-1..l+1) ----------
    lid = leaf_level * (1 << 40) + leaf_pos  # unique leaf id, constant along each run
    _, lfirst, lcount = _runs(lid)
    nc, chunk_off, slot_sorted = _chunks(lcount, C)
    n_chunks = int(nc.sum())
    n_chunks_pad = _size(n_chunks + 1, floor("slot_src", C), 1, headroom)
    slot_src = np.full(n_chunks_pad * C, n, np.int64)
    slot_src[slot_sorted] = order_idx
    particle_slot = np.empty(n, np.int64)
    particle_slot[order_idx] = slot_sorted
    leaf_of = {}  # level -> leaf number of each node (-1 for internal)
    for lvl in levels:
        leaf_of[lvl] = np.full(len(tree.keys[lvl]), -1, np.int64)
    ll, lp = leaf_level[lfirst], leaf_pos[lfirst]
    for lvl in levels:
        s = ll == lvl
        leaf_of[lvl][lp[s]] = np.flatnonzero(s)
    la_all, lb_all = [], []
    coarse = np.array([(i, j, k) for i in range(-1, 3) for j in range(-1, 3) for k in range(-1, 3)
                       if not (0 <= i <= 1 and 0 <= j <= 1 and 0 <= k <= 1)], np.int64)
    for lvl in levels:
        mine = np.flatnonzero(ll == lvl)
        if len(mine) == 0:
            continue
        c = tree.coords[lvl][lp[mine]]
        for dl, cand in ((0, c[:, None, :] + _NEIGHBOURS[None]),
                         (-1, (c[:, None, :] >> 1) + _NEIGHBOURS[None]),
                         (1, (c[:, None, :] << 1) + coarse[None])):
            m = lvl + dl
            if m not in tree.keys:
                continue
            pos = _lookup(tree.keys[m], cand, 1 << m)
            ok = pos >= 0
            ok[ok] = tree.leaf[m][pos[ok]]
            if dl == -1:
                ok &= _adjacent(cand, m, np.broadcast_to(c[:, None, :], cand.shape), lvl)
            a, j = np.nonzero(ok)
            la_all.append(mine[a])
            lb_all.append(leaf_of[m][pos[a, j]])
    la = np.concatenate(la_all)
    lb = np.concatenate(lb_all)
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
    # dummy chunk): one tile row is a dense leaf_size × (P2P_GROUP·leaf_size) block
    G = P2P_GROUP
    rows_per, row_off, slot = _chunks(np.bincount(p_t, minlength=n_chunks), G)
    n_rows = int(row_off[-1])
    n_rows_pad = _size(n_rows + 1, floor("p2p_tgt"), P2P_BLOCK, headroom)
    p2p_tgt = np.full(n_rows_pad, n_chunks_pad - 1, dtype=np.int64)
    p2p_src = np.full(n_rows_pad * G, n_chunks_pad - 1, dtype=np.int64)
    p2p_tgt[:n_rows] = np.repeat(np.arange(n_chunks), rows_per)
    p2p_src[slot] = p_s
    p2p_src = p2p_src.reshape(n_rows_pad, G)
    del p_t, p_s, slot, rep, within, ncb

    # --- parent links and M2L lists (level-local indices) -----------------------------------
    parents, octants = [], []
    for lvl in range(3, depth + 1):
        k = bkeys[lvl]
        par = np.full(n_boxes[lvl], n_boxes[lvl - 1] - 1, dtype=np.int64)
        par[:len(k)] = np.searchsorted(bkeys[lvl - 1], k >> 3)
        octn = np.zeros(n_boxes[lvl], dtype=np.int64)
        octn[:len(k)] = k & 7
        parents.append(par)
        octants.append(octn)
    oct_idx = octant_m2l_offsets()  # (8, 189) offset numbers of each octant's list
    oct_off = M2L_OFFSETS[oct_idx]  # (8, 189, 3)
    pair_t, pair_s, pair_d = [], [], []
    for lvl in levels:
        k, cds, virt = bkeys[lvl], bcoords[lvl], bvirt[lvl]
        octk = k & 7
        for o in range(8):
            t = np.flatnonzero(octk == o)
            for c0 in range(0, len(t), 8192):  # chunks bound the planning memory
                tc = t[c0:c0 + 8192]
                ct = cds[tc][:, None, :]
                cs = ct + oct_off[o][None]
                s = _lookup(k, cs, 1 << lvl)
                ok = s >= 0
                tv = virt[tc][:, None]
                sv = np.where(ok, virt[np.maximum(s, 0)], False)
                # virtual boxes meet real ones only, and only those that do not touch the
                # leaf they belong to (touching pairs are in the near field)
                ok &= ~(tv & sv)
                ok &= ~(tv & ~sv & _adjacent(ct >> 1, lvl - 1, cs, lvl))
                ok &= ~(~tv & sv & _adjacent(cs >> 1, lvl - 1, np.broadcast_to(ct, cs.shape), lvl))
                a, j = np.nonzero(ok)
                pair_t.append(box_offset[lvl] + tc[a])
                pair_s.append(box_offset[lvl] + s[a, j])
                pair_d.append(oct_idx[o][j])
    m2l_tgt, m2l_src, m2l_op = _m2l_tiles(np.concatenate(pair_t), np.concatenate(pair_s),
                                          np.concatenate(pair_d), n_total - 1,
                                          like.m2l_tgt.shape if like else (0, 0), headroom)

    ops = _device_ops(order)
    i32 = lambda a: jnp.asarray(a.astype(np.int32))  # noqa: E731
    n_boxes_t = tuple(n_boxes.get(lvl, 0) for lvl in range(depth + 1))
    return FMMPlan(
        slot_src=i32(slot_src), particle_slot=i32(particle_slot),
        p2p_tgt=i32(p2p_tgt), p2p_src=i32(p2p_src),
        eslot_src=i32(eslot_src), particle_eslot=i32(particle_eslot),
        echunk_box=i32(echunk_box), box_center=jnp.asarray(box_center),
        box_level=i32(box_level),
        parent=tuple(i32(a) for a in parents), octant=tuple(i32(a) for a in octants),
        m2l_tgt=i32(m2l_tgt), m2l_src=i32(m2l_src), m2l_op=i32(m2l_op),
        ops_m2m=ops[0], ops_l2l=ops[1], ops_m2l=ops[2],
        root_lo=jnp.asarray(lo), root_size=jnp.asarray(size),
        n_virtual=jnp.asarray(sum(len(v) for v in virt_keys.values()), jnp.int32),
        n=n, order=order, depth=depth, leaf_size=C, n_boxes=n_boxes_t,
        box_offset=tuple(box_offset.get(lvl, 0) for lvl in range(depth + 1)),
        tol=float(tol))


def _m2l_tiles(t, s, d, dummy, floor=(0, 0), headroom=0.0):
    """Group M2L pairs (target box, source box, offset number) into tiles of ``P`` pairs of
    one offset each, so that a tile is one ``(P, K) @ (K, K)`` GEMM.  ``P`` is the largest
    power of two in [M2L_MIN_TILE, M2L_MAX_TILE] whose padding of the 316 offset groups
    (P/2 each on average) stays under a quarter of the pairs.  Returns tile arrays
    ``tgt``, ``src`` (tiles, P) and ``op`` (tiles,), dummy-padded to a bucketed number of
    tiles; ``floor`` (tiles, P) of a previous plan: at least as many tiles, of that P."""
    n_ops = len(M2L_OFFSETS)
    P = M2L_MIN_TILE
    while P < M2L_MAX_TILE and n_ops * P <= 0.25 * len(t):
        P *= 2
    P = floor[1] or P
    srt = np.lexsort((t, d))
    t, s, d = t[srt], s[srt], d[srt]
    tiles_per, _, slot = _chunks(np.bincount(d, minlength=n_ops), P)
    n_tiles = int(tiles_per.sum())
    n_pad = _size(n_tiles + 1, floor[0], 1, headroom)
    tgt = np.full(n_pad * P, dummy, np.int64)
    src = np.full(n_pad * P, dummy, np.int64)
    tgt[slot], src[slot] = t, s
    op = np.zeros(n_pad, np.int64)
    op[:n_tiles] = np.repeat(np.arange(n_ops), tiles_per)
    return tgt.reshape(n_pad, P), src.reshape(n_pad, P), op


_DEVICE_OPS: dict = {}


def _device_ops(order):
    key = (order, jax.config.jax_enable_x64)
    if key not in _DEVICE_OPS:
        o = operators(order)
        K = n_coeffs(order)
        # rows of M @ m2m_all are [M @ m2m[0].T, ..., M @ m2m[7].T]
        m2m_all = np.transpose(o["m2m"], (2, 0, 1)).reshape(K, 8 * K)
        l2l_all = np.transpose(o["l2l"], (2, 0, 1)).reshape(K, 8 * K)
        # row form: (rows of source multipoles) @ m2l_rows[d] = rows of target locals
        m2l_rows = np.ascontiguousarray(np.transpose(o["m2l"], (0, 2, 1)))
        _DEVICE_OPS[key] = (jnp.asarray(m2m_all), jnp.asarray(l2l_all), jnp.asarray(m2l_rows))
    return _DEVICE_OPS[key]


def plan_is_valid(plan: FMMPlan, positions) -> jax.Array:
    """True iff every particle is still inside its box (within ``plan.tol``); jittable, O(N).

    The box is the one holding the particle's P2M/L2P (its leaf or the leaf's virtual
    child, which lies inside the leaf).  When it is False the plan's interaction lists no
    longer describe the particles and the FMM must be re-planned (:func:`lrnn.fmm.plan`).
    """
    positions = jnp.asarray(positions)
    box = plan.echunk_box[plan.particle_eslot // E_CHUNK]
    c = plan.box_center[box].astype(positions.dtype)
    h = plan.box_side(box, positions.dtype)[:, None]
    u = jnp.abs(positions - c) / h
    return jnp.all(u <= 0.5 * (1 + plan.tol) + 1e-12)
