"""Neighbour layouts with static shapes, built outside ``jit``.

The DeepPot-SE descriptor applies one embedding net per (centre species, neighbour
species) pair.  To do that with dense, static-shape arrays and no wasted work, atoms are
grouped by species in a :class:`Layout` (the DeePMD "sel" layout):

* ``centres[a]``    (C_a,)          indices of the atoms of type ``a`` (padding = n_atoms)
* ``neighbors[a]``  (C_a, T, S)     for each centre of type ``a``, its neighbours of each type ``b``
* ``shifts[a]``     (C_a, T, S, 3)  integer cell shifts ``n``: r_ij = R_j - R_i + n · cell

(one neighbour capacity ``S`` for all neighbour types keeps the number of traced blocks at
``T`` rather than ``T²``, which keeps compile times short).

Padding slots point at index ``n_atoms`` (a dummy row appended to the positions) and are
masked.  Capacities ``C_t`` and ``S_b`` are padding sizes only: the model's output does not
depend on them, so a layout can be reallocated with larger capacities when a neighbour list
overflows (:class:`NeighborOverflow`), never silently truncated.

Two modes: ``"all"`` (every pair of a free molecule; pairs beyond the cutoff contribute
exactly zero through the smooth switch) and ``"cutoff"`` (pairs within the cutoff from
`vesin <https://github.com/Luthaf/vesin>`_, periodic images included).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np

from lrnn.system import chemical_symbols


class NeighborOverflow(RuntimeError):
    """Raised when a structure needs more neighbour/centre slots than a layout holds."""

    def __init__(self, required, capacity):
        self.required = required
        super().__init__(f"neighbour list overflow: need capacity {required}, layout has {capacity}; "
                         "reallocate with the required capacity")


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Layout:
    """Species-blocked neighbour layout (see module docstring).  A pytree of index arrays."""

    centres: tuple
    neighbors: tuple
    shifts: tuple

    def tree_flatten(self):
        return (self.centres, self.neighbors, self.shifts), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def capacity(self) -> "Capacity":
        c = tuple(int(x.shape[-1]) for x in self.centres)
        return Capacity(c, int(self.neighbors[0].shape[-1]))


@dataclasses.dataclass(frozen=True)
class Capacity:
    centres: tuple  # C_a per type
    neighbors: int  # S, neighbours of one type per centre

    def max(self, other: "Capacity") -> "Capacity":
        return Capacity(tuple(map(max, self.centres, other.centres)), max(self.neighbors, other.neighbors))

    def fits(self, required: "Capacity") -> bool:
        return all(a >= b for a, b in zip(self.centres, required.centres)) and self.neighbors >= required.neighbors

    def bucketed(self) -> "Capacity":
        """This capacity rounded up to :func:`bucket` sizes (absent species keep 0)."""
        return Capacity(tuple(bucket(c) if c else 0 for c in self.centres), bucket(self.neighbors))


def bucket(x: int, minimum: int = 4) -> int:
    """``x`` rounded up to a size bucket: a multiple of max(minimum, 2^(floor(log2 x) - 3)),
    i.e. at most 12.5 % padding (above ``8 * minimum``) and O(log x) distinct sizes.  The one
    rule for padded sizes that should rarely change (and so rarely recompile): atom counts
    and neighbour capacities of :class:`lrnn.potential.Potential` (and so of the ASE
    calculator) and the species-block capacity of :class:`lrnn.md.MDSystem`."""
    x = max(int(x), 1)
    step = max(int(minimum), 2 ** max(int(math.floor(math.log2(x))) - 3, 0))
    return int(math.ceil(x / step) * step)


def species_to_types(numbers, type_map: Sequence[int]) -> np.ndarray:
    """Map atomic numbers to type indices 0..T-1 (padding 0 → -1); unknown species raise."""
    numbers = np.asarray(numbers)
    lut = np.full(max(int(numbers.max(initial=0)), max(type_map)) + 1, -2, np.int32)
    lut[0] = -1
    for t, z in enumerate(type_map):
        lut[z] = t
    types = lut[numbers]
    if np.any(types == -2):
        bad = sorted(set(int(z) for z in numbers[types == -2]))
        names = [chemical_symbols()[z] if z < 119 else str(z) for z in bad]
        raise ValueError(f"species {names} (Z={bad}) not known to the model, which knows Z={list(type_map)}")
    return types


def _pairs(positions, cell, pbc, rcut, mode):
    """Directed pairs (i, j, shift) with i != j or a non-zero shift."""
    n = len(positions)
    if mode == "all":
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        return i, j, np.zeros((len(i), 3))
    from vesin import NeighborList

    periodic = bool(np.any(pbc))
    if periodic:
        box = np.asarray(cell, np.float64)
    else:
        box = np.eye(3)  # vesin ignores the box for non-periodic systems
    nl = NeighborList(cutoff=float(rcut), full_list=True)
    i, j, s = nl.compute(points=np.ascontiguousarray(positions, np.float64), box=box,
                         periodic=list(map(bool, pbc)) if periodic else False, quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.float64)


def required_capacity(positions, types, cell, pbc, rcut, n_types, mode="all") -> Capacity:
    """The smallest capacity that holds this structure's layout."""
    n = int((types >= 0).sum())
    t = types[:n]
    cen = tuple(int((t == a).sum()) for a in range(n_types))
    i, j, _ = _pairs(positions[:n], cell, pbc, rcut, mode)
    if len(i) == 0:
        return Capacity(cen, 0)
    counts = np.zeros((n, n_types), np.int64)
    np.add.at(counts, (i, t[j]), 1)
    return Capacity(cen, int(counts.max()))


def build_layout(positions, types, cell, pbc, rcut, capacity: Capacity, mode="all"):
    """Layout arrays (NumPy) for one structure.  ``types`` from :func:`species_to_types`;
    padding atoms (type -1) must come last.  Raises :class:`NeighborOverflow`."""
    n_pad = len(types)
    n = int((types >= 0).sum())
    t = types[:n]
    n_types = len(capacity.centres)
    req = required_capacity(positions, types, cell, pbc, rcut, n_types, mode)
    if not capacity.fits(req):
        raise NeighborOverflow(req, capacity)
    centres = [np.full(c, n_pad, np.int32) for c in capacity.centres]
    slot = np.zeros(n, np.int64)
    for a in range(n_types):
        idx = np.flatnonzero(t == a)
        centres[a][: len(idx)] = idx
        slot[idx] = np.arange(len(idx))
    neigh = [np.full((capacity.centres[a], n_types, capacity.neighbors), n_pad, np.int32) for a in range(n_types)]
    shifts = [np.zeros((capacity.centres[a], n_types, capacity.neighbors, 3), np.float32) for a in range(n_types)]
    i, j, s = _pairs(positions[:n], cell, pbc, rcut, mode)
    if len(i):
        ti, tj = t[i], t[j]
        order = np.lexsort((j, tj, i))  # group by centre, then neighbour type
        i, j, s, ti, tj = i[order], j[order], s[order], ti[order], tj[order]
        key = i * n_types + tj
        first = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
        rank = np.arange(len(i)) - np.repeat(first, np.diff(np.r_[first, len(i)]))
        for a in range(n_types):
            sel = ti == a
            neigh[a][slot[i[sel]], tj[sel], rank[sel]] = j[sel]
            shifts[a][slot[i[sel]], tj[sel], rank[sel]] = s[sel]
    return tuple(centres), tuple(neigh), tuple(shifts)


def sort_padding_last(numbers):
    """Check that padding (0) only appears after the real atoms."""
    m = np.asarray(numbers) > 0
    n = m.sum(-1, keepdims=True)
    ok = (m == (np.arange(m.shape[-1]) < n)).all()
    if not ok:
        raise ValueError("padding atoms (species 0) must come after the real atoms")


def dataset_layouts(positions, numbers, cells, pbcs, type_map, rcut, mode="auto",
                    capacity: Capacity | None = None):
    """Batched :class:`Layout` (NumPy leaves with a leading structure axis) for padded
    arrays, with the capacity grown to fit every structure.  Returns (layout, capacity)."""
    sort_padding_last(numbers)
    types = species_to_types(numbers, type_map)
    m = len(positions)
    if mode == "auto":
        mode = "all" if (not np.any(pbcs) and types.shape[1] <= 128) else "cutoff"
    n_types = len(type_map)
    cap = capacity or Capacity((0,) * n_types, 0)
    for k in range(m):
        cap = cap.max(required_capacity(positions[k], types[k], cells[k], pbcs[k], rcut, n_types, mode))
    per = [build_layout(positions[k], types[k], cells[k], pbcs[k], rcut, cap, mode) for k in range(m)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *per)
    return Layout(*stacked), cap, mode
