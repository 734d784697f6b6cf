"""One structure bound to a potential, in jax-md form (:class:`MDSystem`).

An :class:`MDSystem` holds jax-md's ``displacement_fn, shift_fn`` (:mod:`jax_md.space`:
``free``, ``periodic`` for orthorhombic and ``periodic_general`` for triclinic cells), a
dense :func:`jax_md.partition.neighbor_list` with cutoff ``rcut + skin`` and the jax-md
energy function ``energy_fn(R, neighbor=nbrs) -> eV``.  Inside ``jit`` the dense list is
sorted into lrnn's species-blocked :class:`~lrnn.neighbors.Layout`
(:func:`blocked_layout`), with the periodic image of each pair taken from jax-md's
minimum-image displacement.  Pairs in the skin (between ``rcut`` and ``rcut + skin``)
contribute exactly zero through the smooth switch.  ``energy_fn`` returns NaN when the
per-species capacity ``S`` overflowed (:meth:`MDSystem.overflowed`).  Models with O(N)
long-range parts (FMM, hierarchical SOG) take their plans as ``energy_fn(R, neighbor=nbrs,
plans=plans)`` (:meth:`MDSystem.allocate_plans`, :mod:`lrnn.plans`); the energy is NaN when a
plan no longer holds for ``R``, never silently wrong.

The energy is a pure function of a hashable :class:`EnergySpec` (everything static about
the system: network structure, species, cell, precision) and the network's arrays
(``MDSystem.params``), so jit's own cache shares compilations between systems and
simulations of the same structure and architecture.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lrnn import bundle
from lrnn import plans as plans_lib
from lrnn.md.units import enable_x64, masses_of
from lrnn.neighbors import Layout, bucket, species_to_types
from lrnn.plans import Plans
from lrnn.potential import as_potential, check_structure
from lrnn.system import resolve_total_charge

log = logging.getLogger(__name__)


#: From this many atoms a free-space neighbour list uses jax-md's cell list (O(N)) over a
#: bounding box instead of the O(N²) all-pairs search.
CELL_LIST_MIN_ATOMS = 2000


@functools.lru_cache(maxsize=32)
def jax_md_space(periodic: bool, cell: tuple | None, rcut: float, skin: float, capacity_multiplier: float,
                 free_box: float | None = None):
    """jax-md's ``(displacement_fn, shift_fn, neighbor_fn)`` for a geometry (``cell``: rows
    as a tuple of tuples, or None in free space).  ``free_box`` (Å, free space only): the
    side of a cube for jax-md's cell list; cells are indexed modulo the box, so atoms that
    drift outside it only share cells with others (more candidates, none missed); None: the
    all-pairs search.

    Memoised by value, on purpose: a jax-md neighbour list carries its update function in
    its pytree structure, so jit can only reuse a compiled chunk or energy function for a
    new :class:`MDSystem` of the same geometry when that system gets the very same
    functions."""
    from jax_md import partition, space  # heavy (e3nn, rigid bodies): only when MD runs

    if periodic:
        cell = np.asarray(cell, np.float64)
        if np.allclose(cell, np.diag(np.diag(cell)), atol=1e-10):
            side = np.diag(cell).copy()
            displacement_fn, shift_fn = space.periodic(side)
            box, disable_cl = side, False
        else:
            displacement_fn, shift_fn = space.periodic_general(cell.T, fractional_coordinates=False)
            box, disable_cl = cell.T, True  # jax-md's cell list wants an orthorhombic box here
    else:
        displacement_fn, shift_fn = space.free()
        box, disable_cl = (1000.0, True) if free_box is None else (float(free_box), False)
    neighbor_fn = partition.neighbor_list(displacement_fn, box, rcut, dr_threshold=skin,
                                          capacity_multiplier=capacity_multiplier, disable_cell_list=disable_cl,
                                          format=partition.Dense)
    return displacement_fn, shift_fn, neighbor_fn


@dataclasses.dataclass(frozen=True)
class EnergySpec:
    """Everything static about an :class:`MDSystem`'s energy (hashable: a jit static
    argument).  ``centres[a]``: the indices of the atoms of species ``a``."""

    graphdef: object
    types: tuple
    centres: tuple
    periodic: bool
    cell: tuple
    inv_cell: tuple
    precision: str
    displacement_fn: Callable
    shift_fn: Callable
    extra_energy: Optional[Callable]
    committee: int = 1  # members of a committee model (the energy is their mean)

    @property
    def n(self) -> int:
        return len(self.types)

    @property
    def n_types(self) -> int:
        return len(self.centres)

    @property
    def cdtype(self):
        return jnp.float64 if self.precision == "float64" else jnp.float32


def blocked_layout(spec: EnergySpec, R, idx, S: int):
    """Species-blocked layout of capacity ``S`` and an overflow flag, from a dense jax-md
    index array ``idx`` (N, K) (traceable)."""
    n, T = spec.n, spec.n_types
    t_ext = jnp.asarray(np.r_[spec.types, -1], jnp.int32)
    idx = idx.astype(jnp.int32)
    over = jnp.zeros((), bool)
    centres, neigh, shifts = [], [], []
    R_ext = jnp.concatenate([R, jnp.zeros((1, 3), R.dtype)], axis=0)
    for a in range(T):
        cen = np.asarray(spec.centres[a], np.int32)
        c = len(cen)
        rows = idx[cen]  # (C_a, K)
        tj = t_ext[rows]
        blocks = []
        for b in range(T):
            m = tj == b
            pos = jnp.cumsum(m, axis=1) - 1
            col = jnp.where(m & (pos < S), pos, S)
            out = jnp.full((c, S + 1), n, jnp.int32).at[jnp.arange(c)[:, None], col.astype(jnp.int32)].set(
                jnp.where(m, rows, n).astype(jnp.int32))
            blocks.append(out[:, :S])
            over = over | jnp.any(jnp.sum(m, axis=1) > S)
        nb = jnp.stack(blocks, axis=1) if c else jnp.zeros((0, T, S), jnp.int32)  # (C_a, T, S)
        if spec.periodic and c:
            Rs = jax.lax.stop_gradient(R_ext)
            rj = Rs[nb]
            ri = jnp.broadcast_to(Rs[cen][:, None, None, :], rj.shape)
            dmin = jax.vmap(spec.displacement_fn)(rj.reshape(-1, 3), ri.reshape(-1, 3)).reshape(rj.shape)
            sh = jnp.round((dmin - (rj - ri)) @ jnp.asarray(np.array(spec.inv_cell)))
        else:
            sh = jnp.zeros((c, T, S, 3))
        centres.append(jnp.asarray(cen))
        neigh.append(nb)
        shifts.append(sh)
    return Layout(tuple(centres), tuple(neigh), tuple(shifts)), over


def overflowed(spec: EnergySpec, nbrs, S: int):
    """True (a traced bool) when ``nbrs`` or the species blocks of capacity ``S`` overflowed."""
    t_ext = jnp.asarray(np.r_[spec.types, -1], jnp.int32)
    tj = t_ext[nbrs.idx]
    over = jnp.zeros((), bool)
    for b in range(spec.n_types):
        over = over | jnp.any(jnp.sum(tj == b, axis=1) > S)
    return over | (nbrs.did_buffer_overflow > 0)


def energy(spec: EnergySpec, S: int, params, R, neighbor=None, plans: Plans | None = None, **unused):
    """The jax-md energy (eV, float64) of positions ``R`` with neighbour list ``neighbor``
    and long-range ``plans`` (:class:`lrnn.plans.Plans`; None: exact sums): the network
    energy without the constant per-element shifts, plus ``extra_energy``; NaN if the
    capacity ``S`` is too small for the list or a plan no longer holds for ``R``.
    ``params``: ``MDSystem.params``."""
    if neighbor is None:
        raise ValueError("energy_fn needs neighbor=nbrs (from MDSystem.allocate)")
    cd = spec.cdtype
    layout, over = blocked_layout(spec, R, neighbor.idx, S)
    system = bundle.System(R.astype(cd), jnp.asarray(np.array(spec.types, np.int32)),
                           jnp.asarray(np.array(spec.cell), cd), params["total_charge"])
    if plans is not None:
        over = over | ~plans_lib.valid(plans, jax.lax.stop_gradient(R))
    if spec.committee > 1:  # the committee mean: one vmap over the stacked weights
        e = jnp.mean(jax.vmap(lambda w: bundle.network_energy(spec.graphdef, bundle.Params(w, params["model"].stats, None),
                                                              system, layout, plans))(params["model"].weights))
    else:
        e = bundle.network_energy(spec.graphdef, params["model"], system, layout, plans)
    e = e.astype(jnp.float64)
    if spec.extra_energy is not None:
        e = e + spec.extra_energy(R)
    return jnp.where(over, jnp.nan, e)


#: :func:`energy` and its value and gradient, jitted (``spec`` and ``S`` static)
energy_jit = jax.jit(energy, static_argnums=(0, 1))
energy_and_grad = jax.jit(jax.value_and_grad(energy, argnums=3), static_argnums=(0, 1))


class MDSystem:
    """A structure bound to a potential, in jax-md form (see the module docstring).

    ``model``: a :class:`~lrnn.potential.Potential` or a checkpoint path.  ``positions``
    (N, 3) Å, ``numbers`` (N,), ``cell`` (3, 3) rows in Å or ``None`` for free space.
    ``skin`` (Å) is added to the model cutoff; the list is rebuilt when an atom moved more
    than ``skin / 2``.  ``extra_energy(R) -> eV`` is an optional additional jittable term
    (restraints, external fields, terms not in the checkpoint).  ``total_charge`` (e):
    ``None`` means neutral, except that a model with latent-charge terms raises for an odd
    sum of atomic numbers (:func:`lrnn.system.resolve_total_charge`).  ``precision``:
    ``"float64"`` evaluates the network in float64 (float32 weights promoted exactly),
    ``"float32"`` in float32."""

    def __init__(self, model, positions, numbers, cell=None, pbc=None, *, skin: float = 1.0,
                 capacity_multiplier: float = 1.25, precision: str = "float64", total_charge: float | None = None,
                 extra_energy: Optional[Callable] = None):
        enable_x64()
        self.potential = pot = as_potential(model)
        positions = np.asarray(positions, np.float64)
        self.numbers = np.asarray(numbers, np.int64)
        if pbc is None:
            pbc = cell is not None and abs(np.linalg.det(np.asarray(cell, float))) > 1e-12
        pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
        if pbc.any() and not pbc.all():
            raise ValueError(f"partial periodicity pbc={pbc.tolist()} is not supported by lrnn md; "
                             "use a fully periodic cell (with vacuum) or free space")
        self.periodic = bool(pbc.all())
        cell = None if cell is None else np.asarray(cell, np.float64).reshape(3, 3)
        check_structure(pot, positions, self.numbers, cell if self.periodic else None,
                        pbc if self.periodic else None)
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be float64 or float32, got {precision!r}")
        self.precision = precision
        self.cdtype = jnp.float64 if precision == "float64" else jnp.float32
        self.n = len(self.numbers)
        self.types = species_to_types(self.numbers, pot.type_map).astype(np.int32)
        self.n_types = len(pot.type_map)
        self.centres = [np.flatnonzero(self.types == a).astype(np.int32) for a in range(self.n_types)]
        self.masses = masses_of(self.numbers)
        self.rcut = float(pot.config.rcut)
        self.skin = float(skin)
        self.capacity_multiplier = float(capacity_multiplier)
        self.total_charge = resolve_total_charge(total_charge, self.numbers, pot.config.has_charge_terms)
        self.extra_energy = extra_energy
        #: constant per-element energy shifts (eV, float64), added to reported energies
        self.energy_offset = float(np.mean(pot.reference_energy(self.numbers[None])[0]))  # committee: the mean
        self.S: int = 0  # per-species neighbour capacity of the blocked layout
        self.reallocations = 0
        r_list = self.rcut + self.skin
        if self.periodic:
            self.cell = cell
            self.inv_cell = np.linalg.inv(cell)
            heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
            if r_list > heights.min() / 2:
                raise ValueError(f"cell too small for the minimum-image convention: rcut + skin = {r_list:.2f} Å "
                                 f"exceeds half the smallest cell height ({heights.min() / 2:.2f} Å); replicate "
                                 "the cell (ase.Atoms.repeat) or reduce the skin")
            if self.n > 5000 and not np.allclose(cell, np.diag(np.diag(cell)), atol=1e-10):
                log.warning("triclinic cell: the jax-md neighbour list is O(N^2) for %d atoms", self.n)
        else:
            self.cell = np.zeros((3, 3))
            self.inv_cell = np.zeros((3, 3))
        cell_key = tuple(map(tuple, self.cell.tolist())) if self.periodic else None
        free_box = None
        if not self.periodic and self.n >= CELL_LIST_MIN_ATOMS:  # cells of >= rcut + skin, 3+ per side
            free_box = float(max(np.ptp(positions, axis=0).max() + 2 * r_list, 3 * r_list))
            free_box = math.ceil(free_box / r_list) * r_list  # one box per size class: shared compilations
        self.displacement_fn, self.shift_fn, self.neighbor_fn = jax_md_space(
            self.periodic, cell_key, self.rcut, self.skin, self.capacity_multiplier, free_box)
        #: the static part of the energy function (a jit static argument)
        self.spec = EnergySpec(pot.graphdef, tuple(self.types.tolist()), tuple(tuple(c.tolist()) for c in self.centres),
                               self.periodic, tuple(map(tuple, self.cell.tolist())),
                               tuple(map(tuple, self.inv_cell.tolist())), precision, self.displacement_fn,
                               self.shift_fn, extra_energy, pot.committee)
        #: the arrays of the energy function: the model's params (without the constant
        #: shifts, reported through ``energy_offset``) and the total charge (e)
        self.params = {"model": bundle.Params(pot.state, pot.stats, None),
                       "total_charge": jnp.asarray(self.total_charge, self.cdtype)}
        self._energy_fns: dict = {}
        self.positions0 = self.wrap(positions)
        #: widths (Å) of the hierarchical SOG term the plans are made for (None: no such term)
        self.sog_widths = plans_lib.sog_widths(pot.config, pot.state)
        self.replans = 0  # long-range plans allocated after the first

    def wrap(self, R) -> np.ndarray:
        """Positions wrapped into the cell (periodic systems; unchanged in free space)."""
        R = np.asarray(R, np.float64)
        if not self.periodic:
            return R
        frac = R @ self.inv_cell
        return (frac - np.floor(frac)) @ self.cell

    # ------------------------------------------------------------------ neighbour lists
    def required_S(self, nbrs) -> int:
        """Largest number of neighbours of one species around one atom in ``nbrs`` (host)."""
        idx = np.asarray(nbrs.idx)
        t_ext = np.r_[self.types, -1]
        tj = t_ext[idx]
        return int(max((tj == b).sum(1).max(initial=0) for b in range(self.n_types)))

    def allocate(self, R=None):
        """A new jax-md neighbour list for positions ``R`` (default: the initial ones), with
        the per-species capacity ``S`` grown to fit (``capacity_multiplier`` of headroom,
        rounded up to a :func:`lrnn.neighbors.bucket` size)."""
        R = jnp.asarray(self.positions0 if R is None else R, jnp.float64)
        if self.periodic and jnp.any((R @ self.inv_cell < 0) | (R @ self.inv_cell >= 1)):
            R = jnp.asarray(self.wrap(R))
        nbrs = self.neighbor_fn.allocate(R)
        need = self.required_S(nbrs)
        if need > self.S or self.S == 0:
            new = bucket(math.ceil(need * self.capacity_multiplier))
            if self.S:
                log.warning("species-blocked neighbour capacity %d -> %d", self.S, new)
            self.S = max(new, self.S)
        return nbrs

    def allocate_plans(self, R=None, previous: Plans | None = None) -> Plans:
        """Long-range plans (:func:`lrnn.plans.allocate`) for positions ``R`` (default: the
        initial ones); empty for models without O(N) parts (for periodic cells: without a P3M term) and fewer than
        ``fmm_min_atoms`` atoms.  ``previous``: the plans replaced (their sizes are floors:
        no recompilation for a re-plan that fits)."""
        R = np.asarray(self.positions0 if R is None else R, np.float64)
        return plans_lib.allocate(self.potential.config, R, self.cell if self.periodic else None,
                                  sog_widths=self.sog_widths, previous=previous)

    def overflowed(self, nbrs, S: int | None = None):
        """True (a traced bool) when ``nbrs`` or the species blocks of capacity ``S`` overflowed."""
        return overflowed(self.spec, nbrs, self.S if S is None else S)

    # ------------------------------------------------------------------ energy
    def energy_fn_for(self, S: int) -> Callable:
        """jax-md energy function ``energy_fn(R, neighbor=nbrs, plans=None, **kwargs) -> eV`` (network
        energy without the constant per-element shifts, plus ``extra_energy``) for
        species-block capacity ``S``; NaN if ``S`` is too small for ``nbrs``."""
        if S not in self._energy_fns:  # one function object per S: jitting it again reuses the compilation
            self._energy_fns[S] = functools.partial(energy, self.spec, S, self.params)
        return self._energy_fns[S]

    @property
    def energy_fn(self) -> Callable:
        """The energy function for the current capacity (allocate a list first)."""
        if self.S == 0:
            raise RuntimeError("call MDSystem.allocate(R) before asking for energy_fn")
        return self.energy_fn_for(self.S)

    def total_energy(self, R, nbrs=None, plans: Plans | None = None) -> float:
        """Potential energy (eV, float64) including the per-element shifts."""
        nbrs = nbrs if nbrs is not None else self.allocate(R)
        plans = plans if plans is not None else self.allocate_plans(R)
        e = energy_jit(self.spec, self.S, self.params, jnp.asarray(R, jnp.float64), nbrs, plans)
        return float(e) + self.energy_offset
