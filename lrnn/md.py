r"""Molecular dynamics with lrnn potentials in `jax-md <https://github.com/jax-md/jax-md>`_.

Units are eV, Å and amu, so jax-md's time unit is :math:`\text{Å}\sqrt{\text{amu}/\text{eV}}
\approx 10.18` fs (ASE's time unit, ``ase.units.fs`` converts); time steps are given in fs.

Pieces, from low to high level:

* :class:`MDSystem` — one structure (species, optional cell) bound to a potential.  It
  holds jax-md's ``displacement_fn, shift_fn`` (:mod:`jax_md.space`: ``free``, ``periodic``
  for orthorhombic and ``periodic_general`` for triclinic cells), a dense
  :func:`jax_md.partition.neighbor_list` with cutoff ``rcut + skin`` and the jax-md energy
  function ``energy_fn(R, neighbor=nbrs) -> eV``.  Inside ``jit`` the dense list is sorted
  into lrnn's species-blocked :class:`~lrnn.neighbors.Layout`, with the periodic image of
  each pair taken from jax-md's minimum-image displacement.  Pairs in the skin (between
  ``rcut`` and ``rcut + skin``) contribute exactly zero through the smooth switch.
* Overflow: the jax-md list (``nbrs.did_buffer_overflow``) or the per-species block
  capacity ``S`` (:meth:`MDSystem.overflowed`) may fill up.  :class:`Simulation` checks
  both after every chunk, logs a warning, re-allocates from the state at the start of the
  chunk and runs the chunk again: nothing is silently truncated.  Called on its own,
  ``energy_fn`` returns NaN when ``S`` overflowed.
* :class:`Simulation` — NVE (velocity Verlet, :func:`jax_md.simulate.nve`) and NVT
  (Langevin BAOAB, :func:`jax_md.simulate.nvt_langevin`; Nosé–Hoover chain,
  :func:`jax_md.simulate.nvt_nose_hoover`) in jitted chunks (``lax.fori_loop``), recording
  potential and kinetic energy every ``log_every`` steps.  Non-finite values stop the run
  with :class:`NonFiniteError`, which carries the last good frame.
* :func:`run_md` — the driver behind ``lrnn md``: extxyz trajectory, CSV log, PNG plot,
  progress bar, all flushed chunk by chunk.

Integration runs in float64 (x64 is switched on here).  ``precision="float64"`` (the
default) evaluates the network in float64 too (the float32 weights are promoted exactly),
which gives the best energy conservation; ``precision="float32"`` evaluates it in float32
(faster, forces carry float32 rounding noise).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

CSV_HEADER = "time_fs,epot_eV,ekin_eV,etot_eV,temperature_K"


def enable_x64() -> None:
    """MD integrates in float64 (jax-md truncates to float32 otherwise)."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def _ase_units():
    from ase import units

    return units


def fs_to_internal(dt_fs: float) -> float:
    """A time in fs in jax-md/ASE units (Å·sqrt(amu/eV) ≈ 10.18 fs)."""
    return float(dt_fs) * _ase_units().fs


def kB() -> float:
    from lrnn.units import KB

    return KB


def masses_of(numbers) -> np.ndarray:
    """Atomic masses (amu) from ``ase.data.atomic_masses``."""
    from ase.data import atomic_masses

    return np.asarray(atomic_masses, np.float64)[np.asarray(numbers, int)]


class NonFiniteError(FloatingPointError):
    """A NaN or infinity appeared during MD.  ``frame`` is the last good :class:`Frame`."""

    def __init__(self, message: str, frame: "Frame | None"):
        super().__init__(message)
        self.frame = frame


@dataclasses.dataclass
class Frame:
    """One recorded MD state (host NumPy; Å, amu·Å/time-unit, eV, K)."""

    step: int
    time_fs: float
    positions: np.ndarray
    momenta: np.ndarray
    epot: float
    ekin: float
    temperature: float

    @property
    def etot(self) -> float:
        return self.epot + self.ekin


# ----------------------------------------------------------------------------- helpers
def _as_potential(model):
    from lrnn.potential import Potential, load

    return model if isinstance(model, Potential) else load(model)


def requires_cell(potential) -> bool:
    """Whether a model can only be evaluated on periodic structures (it was trained on
    periodic data, or one of its terms needs a cell): ``meta["requires_cell"]`` or
    ``meta["periodic"]`` in the checkpoint."""
    meta = getattr(potential, "meta", {}) or {}
    return bool(meta.get("requires_cell") or meta.get("periodic"))


def check_structure(potential, positions, numbers, cell=None, pbc=None, where: str = "structure"):
    """Validate a structure for ``potential``: finite coordinates, known species, no atoms
    closer than 0.1 Å, a cell with volume for periodic structures, a cell at all when the
    model needs one, and boundaries that fit the model's long-range terms
    (:func:`lrnn.batch.check_boundaries`).  Raises ``ValueError`` naming the problem."""
    from lrnn.batch import check_boundaries
    from lrnn.system import validate_structure

    positions = np.asarray(positions, np.float64)
    numbers = np.asarray(numbers)
    periodic = pbc is not None and bool(np.any(pbc))
    if periodic and cell is None:
        raise ValueError(f"{where}: periodic boundary conditions were requested but no cell was given")
    validate_structure(positions, numbers, cell if periodic else None, pbc if periodic else None, where=where,
                       allowed=potential.type_map)
    if getattr(potential, "config", None) is not None:
        check_boundaries(potential.config, np.broadcast_to(np.asarray(pbc if periodic else False, bool), (3,)))
    if requires_cell(potential) and not periodic:
        raise ValueError(f"{where}: the model was trained on periodic structures and needs a cell; "
                         "give the structure a cell (Lattice= in extxyz, atoms.cell and atoms.pbc in ASE)")


def _bucket(x: int, minimum: int = 4) -> int:
    """Round up to a size bucket: multiples of max(minimum, 2^(floor(log2 x) - 3)), i.e. at
    most 12.5 % padding and O(log) distinct sizes."""
    x = max(int(x), 1)
    step = max(minimum, 2 ** max(int(math.floor(math.log2(x))) - 3, 0))
    return int(math.ceil(x / step) * step)


# ----------------------------------------------------------------------------- the system
_SPACE_CACHE: dict = {}
_FN_CACHE: dict = {}
_KEEP_ALIVE: dict = {}


def clear_caches() -> None:
    """Forget the cached jax-md spaces, energy and chunk functions (and their compilations)."""
    _SPACE_CACHE.clear()
    _FN_CACHE.clear()
    _KEEP_ALIVE.clear()


def _potential_key(pot):
    """Checkpoints with the same parameter checksum, statistics and dtype share compiled
    functions; other potentials are keyed by identity."""
    meta = getattr(pot, "meta", {}) or {}
    if meta.get("checksum"):
        import json

        stats = json.dumps({k: np.asarray(v).tolist() for k, v in sorted(meta.get("stats", {}).items())})
        return ("checkpoint", meta["checksum"], stats, str(meta.get("dtype")), json.dumps(meta.get("model"),
                                                                                          sort_keys=True))
    return ("object", id(pot))


def _make_space(periodic, cell, rcut, skin, capacity_multiplier):
    from jax_md import partition, space

    if periodic:
        if np.allclose(cell, np.diag(np.diag(cell)), atol=1e-10):
            side = np.diag(cell).copy()
            displacement_fn, shift_fn = space.periodic(side)
            box, disable_cl = side, False
        else:
            displacement_fn, shift_fn = space.periodic_general(cell.T, fractional_coordinates=False)
            box, disable_cl = cell.T, True  # jax-md's cell list wants an orthorhombic box here
    else:
        displacement_fn, shift_fn = space.free()
        box, disable_cl = 1000.0, True
    neighbor_fn = partition.neighbor_list(displacement_fn, box, rcut, dr_threshold=skin,
                                          capacity_multiplier=capacity_multiplier, disable_cell_list=disable_cl,
                                          format=partition.Dense)
    return displacement_fn, shift_fn, neighbor_fn


class MDSystem:
    """A structure bound to a potential, in jax-md form (see module docstring).

    ``model``: a :class:`~lrnn.potential.Potential` or a checkpoint path.  ``positions``
    (N, 3) Å, ``numbers`` (N,), ``cell`` (3, 3) rows in Å or ``None`` for free space.
    ``skin`` (Å) is added to the model cutoff; the list is rebuilt when an atom moved more
    than ``skin / 2``.  ``extra_energy(R) -> eV`` is an optional additional jittable term
    (restraints, external fields, terms not in the checkpoint).  ``total_charge`` (e):
    ``None`` means neutral, except that a model with latent-charge terms raises for an odd
    sum of atomic numbers (:func:`lrnn.system.resolve_total_charge`)."""

    def __init__(self, model, positions, numbers, cell=None, pbc=None, *, skin: float = 1.0,
                 capacity_multiplier: float = 1.25, precision: str = "float64", total_charge: float | None = None,
                 extra_energy: Optional[Callable] = None):
        from lrnn.models.deeppot import shift_energy
        from lrnn.neighbors import species_to_types
        from lrnn.system import resolve_total_charge

        enable_x64()
        self.potential = pot = _as_potential(model)
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
        self.energy_offset = float(shift_energy(self.numbers[None], pot.energy_shift, pot.type_map)[0])
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
        # jax-md space and neighbour-list functions are shared between systems of the same
        # geometry, and the energy / chunk functions between systems of the same key, so
        # that a new MDSystem or Simulation of the same structure does not recompile
        geo = (self.periodic, self.cell.tobytes(), self.rcut, self.skin, self.capacity_multiplier)
        if geo not in _SPACE_CACHE:
            _SPACE_CACHE[geo] = _make_space(self.periodic, self.cell, self.rcut, self.skin, self.capacity_multiplier)
        self.displacement_fn, self.shift_fn, self.neighbor_fn = _SPACE_CACHE[geo]
        self.key = (geo, _potential_key(pot), self.numbers.tobytes(), precision, self.total_charge,
                    id(extra_energy))
        _KEEP_ALIVE[self.key] = (pot, extra_energy)
        self.positions0 = self.wrap(positions)

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
        the per-species capacity ``S`` grown to fit (``capacity_multiplier`` of headroom)."""
        R = jnp.asarray(self.positions0 if R is None else R, jnp.float64)
        if self.periodic and jnp.any((R @ self.inv_cell < 0) | (R @ self.inv_cell >= 1)):
            R = jnp.asarray(self.wrap(R))
        nbrs = self.neighbor_fn.allocate(R)
        need = self.required_S(nbrs)
        if need > self.S or self.S == 0:
            new = max(int(math.ceil(need * self.capacity_multiplier)), 1)
            if self.S:
                log.warning("species-blocked neighbour capacity %d -> %d", self.S, new)
            self.S = max(new, self.S)
        return nbrs

    def _blocked(self, R, idx, S):
        """Species-blocked layout and an overflow flag from a dense jax-md index array."""
        from lrnn.neighbors import Layout

        n, T = self.n, self.n_types
        t_ext = jnp.asarray(np.r_[self.types, -1], jnp.int32)
        idx = idx.astype(jnp.int32)
        over = jnp.zeros((), bool)
        centres, neigh, shifts = [], [], []
        R_ext = jnp.concatenate([R, jnp.zeros((1, 3), R.dtype)], axis=0)
        for a in range(T):
            cen = self.centres[a]
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
            if self.periodic and c:
                Rs = jax.lax.stop_gradient(R_ext)
                rj = Rs[nb]
                ri = jnp.broadcast_to(Rs[cen][:, None, None, :], rj.shape)
                dmin = jax.vmap(self.displacement_fn)(rj.reshape(-1, 3), ri.reshape(-1, 3)).reshape(rj.shape)
                sh = jnp.round((dmin - (rj - ri)) @ jnp.asarray(self.inv_cell))
            else:
                sh = jnp.zeros((c, T, S, 3))
            centres.append(jnp.asarray(cen))
            neigh.append(nb)
            shifts.append(sh)
        return Layout(tuple(centres), tuple(neigh), tuple(shifts)), over

    def overflowed(self, nbrs, S: int | None = None):
        """True (a traced bool) when ``nbrs`` or the species blocks of capacity ``S`` overflowed."""
        S = self.S if S is None else S
        t_ext = jnp.asarray(np.r_[self.types, -1], jnp.int32)
        tj = t_ext[nbrs.idx]
        over = jnp.zeros((), bool)
        for b in range(self.n_types):
            over = over | jnp.any(jnp.sum(tj == b, axis=1) > S)
        return over | (nbrs.did_buffer_overflow > 0)

    # ------------------------------------------------------------------ energy
    def energy_fn_for(self, S: int) -> Callable:
        """jax-md energy function ``energy_fn(R, neighbor=nbrs, **kwargs) -> eV`` (network
        energy without the constant per-element shifts, plus ``extra_energy``) for
        species-block capacity ``S``; NaN if ``S`` is too small for ``nbrs``."""
        key = (self.key, "energy", S)
        if key in _FN_CACHE:
            return _FN_CACHE[key]
        from lrnn.potential import energy_fn as model_energy

        pot = self.potential
        graphdef, state, stats = pot.graphdef, pot.state, pot.stats
        cd = self.cdtype
        types = jnp.asarray(self.types)
        cell = jnp.asarray(self.cell, cd)
        q = jnp.asarray(self.total_charge, cd)
        extra = self.extra_energy

        def energy_fn(R, neighbor=None, **unused):
            if neighbor is None:
                raise ValueError("energy_fn needs neighbor=nbrs (from MDSystem.allocate)")
            layout, over = self._blocked(R, neighbor.idx, S)
            inputs = {"positions": R.astype(cd), "cell": cell, "types": types, "total_charge": q, "layout": layout}
            e = model_energy(graphdef, state, stats, inputs).astype(jnp.float64)
            if extra is not None:
                e = e + extra(R)
            return jnp.where(over, jnp.nan, e)

        _FN_CACHE[key] = energy_fn
        return energy_fn

    @property
    def energy_fn(self) -> Callable:
        """The energy function for the current capacity (allocate a list first)."""
        if self.S == 0:
            raise RuntimeError("call MDSystem.allocate(R) before asking for energy_fn")
        return self.energy_fn_for(self.S)

    def total_energy(self, R, nbrs=None) -> float:
        """Potential energy (eV, float64) including the per-element shifts."""
        nbrs = nbrs if nbrs is not None else self.allocate(R)
        return float(jax.jit(self.energy_fn)(jnp.asarray(R, jnp.float64), neighbor=nbrs)) + self.energy_offset


def initial_momenta(masses, temperature_K: float, seed: int = 0, zero_com: bool = True) -> np.ndarray:
    """Maxwell–Boltzmann momenta (amu·Å per ASE time unit), centre-of-mass momentum removed and
    rescaled so that the kinetic temperature 2 E_kin / (3 N k_B) is exactly ``temperature_K``."""
    m = np.asarray(masses, np.float64)[:, None]
    n = len(m)
    if temperature_K <= 0:
        return np.zeros((n, 3))
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3)) * np.sqrt(m * kB() * temperature_K)
    if zero_com and n > 1:
        p -= m * (p.sum(0) / m.sum())
    ekin = 0.5 * np.sum(p * p / m)
    p *= np.sqrt(1.5 * n * kB() * temperature_K / ekin)
    return p


# ----------------------------------------------------------------------------- simulation
class Simulation:
    """Chunked jax-md MD for an :class:`MDSystem` (see module docstring).

    ``ensemble``: ``"nve"`` or ``"nvt"``; ``thermostat``: ``"langevin"`` (friction
    ``friction`` in 1/fs) or ``"nose-hoover"`` (chain of ``chain_length``, time constant
    ``tau_fs``).  Energies are recorded every ``log_every`` steps; one jitted call runs up to
    ``chunk_records`` records (``log_every * chunk_records`` steps)."""

    def __init__(self, system: MDSystem, *, ensemble: str = "nve", thermostat: str = "langevin",
                 dt_fs: float = 0.5, temperature_K: float = 300.0, friction: float = 0.01, tau_fs: float = 100.0,
                 chain_length: int = 3, seed: int = 0, log_every: int = 10, chunk_records: int = 20):
        enable_x64()
        ensemble = ensemble.lower()
        thermostat = thermostat.lower().replace("_", "-")
        if ensemble not in ("nve", "nvt"):
            raise ValueError(f"ensemble must be nve or nvt, got {ensemble!r}")
        if thermostat not in ("langevin", "nose-hoover"):
            raise ValueError(f"thermostat must be langevin or nose-hoover, got {thermostat!r}")
        if not (dt_fs > 0 and math.isfinite(dt_fs)):
            raise ValueError(f"time step must be positive, got {dt_fs} fs")
        if ensemble == "nvt" and not temperature_K > 0:
            raise ValueError(f"NVT needs a positive temperature, got {temperature_K} K")
        self.system = system
        self.ensemble, self.thermostat = ensemble, thermostat
        self.dt_fs = float(dt_fs)
        #: the time step in ASE/jax-md units, rounded as jax-md rounds it (float32)
        self.dt = float(np.float32(fs_to_internal(dt_fs)))
        self.temperature_K = float(temperature_K)
        self.kT = kB() * self.temperature_K
        self.friction, self.tau_fs, self.chain_length = float(friction), float(tau_fs), int(chain_length)
        self.seed = int(seed)
        self.log_every, self.chunk_records = int(log_every), int(chunk_records)
        if self.log_every < 1 or self.chunk_records < 1:
            raise ValueError("log_every and chunk_records must be >= 1")
        self._keys: set = set()
        self.state = None
        self.nbrs = None
        self.step = 0
        self.last_good: Frame | None = None

    # ------------------------------------------------------------------ building blocks
    def _build(self, S):
        """(init_fn, apply_fn, jitted chunk, jitted energy) for capacity ``S``, cached per
        system key, ensemble and buffer size (dt, kT and log_every are runtime arguments of
        the chunk except for Nose-Hoover, whose chain is built for one dt and kT)."""
        from jax_md import simulate

        sysm = self.system
        if self.ensemble == "nve":
            ens = ("nve",)
        elif self.thermostat == "langevin":
            ens = ("langevin", self.friction)
        else:
            ens = ("nose-hoover", self.dt, self.kT, self.tau_fs, self.chain_length)
        key = (sysm.key, "chunk", ens, S, self.chunk_records)
        self._keys.add(key)
        if key in _FN_CACHE:
            return _FN_CACHE[key]
        energy_fn = sysm.energy_fn_for(S)
        shift_fn = sysm.shift_fn
        if ens[0] == "nve":
            init_fn, apply_fn = simulate.nve(energy_fn, shift_fn, self.dt)
        elif ens[0] == "langevin":
            gamma = self.friction / fs_to_internal(1.0)
            init_fn, apply_fn = simulate.nvt_langevin(energy_fn, shift_fn, self.dt, self.kT, gamma=gamma)
        else:
            init_fn, apply_fn = simulate.nvt_nose_hoover(energy_fn, shift_fn, self.dt, self.kT,
                                                         chain_length=self.chain_length,
                                                         tau=fs_to_internal(self.tau_fs))
        n_rec_max = self.chunk_records
        runtime_dt = ens[0] != "nose-hoover"

        def chunk(state, nbrs, n_rec, log_every, dt, kT):
            n = sysm.n
            buf = (jnp.zeros(n_rec_max), jnp.zeros(n_rec_max), jnp.zeros((n_rec_max, n, 3)),
                   jnp.zeros((n_rec_max, n, 3)))
            kw = {"dt": dt} if ens[0] == "nve" else ({"dt": dt, "kT": kT} if runtime_dt else {})

            def step(_, c):
                st, nb, ov = c
                st = apply_fn(st, neighbor=nb, **kw)
                nb = nb.update(st.position)
                return st, nb, ov | sysm.overflowed(nb, S)

            def record(i, c):
                st, nb, ov, (ep, ek, pos, mom) = c
                st, nb, ov = jax.lax.fori_loop(0, log_every, step, (st, nb, ov))
                e = energy_fn(st.position, neighbor=nb)
                k = 0.5 * jnp.sum(st.momentum ** 2 / st.mass)
                return st, nb, ov, (ep.at[i].set(e), ek.at[i].set(k), pos.at[i].set(st.position),
                                    mom.at[i].set(st.momentum))

            return jax.lax.fori_loop(0, n_rec, record, (state, nbrs, jnp.zeros((), bool), buf))

        ekey = (sysm.key, "energy_jit", S)
        if ekey not in _FN_CACHE:
            _FN_CACHE[ekey] = jax.jit(energy_fn)
            _FN_CACHE[(sysm.key, "value_and_grad", S)] = jax.jit(jax.value_and_grad(energy_fn))
        fns = (init_fn, apply_fn, jax.jit(chunk), _FN_CACHE[ekey])
        _FN_CACHE[key] = fns
        return fns

    def _call_chunk(self, chunk, state, nbrs, n_rec):
        return chunk(state, nbrs, jnp.asarray(n_rec, jnp.int32), jnp.asarray(self.log_every, jnp.int32),
                     jnp.asarray(self.dt, jnp.float32), jnp.asarray(self.kT, jnp.float64))

    def compilations(self) -> int:
        """How many times the chunk functions this simulation used were compiled (all
        capacities together; cached compilations shared with earlier simulations of the
        same system count too)."""
        return sum(_FN_CACHE[k][2]._cache_size() for k in self._keys if k in _FN_CACHE)

    # ------------------------------------------------------------------ public API
    def init(self, positions=None, momenta=None, temperature_K: float | None = None) -> Frame:
        """Set the initial state.  ``momenta`` (amu·Å/ASE time unit) default to
        Maxwell–Boltzmann at ``temperature_K`` (default: the simulation temperature)."""
        from jax_md import simulate

        sysm = self.system
        R = sysm.wrap(sysm.positions0 if positions is None else positions)
        if momenta is None:
            t = self.temperature_K if temperature_K is None else temperature_K
            momenta = initial_momenta(sysm.masses, t, self.seed)
        momenta = np.asarray(momenta, np.float64).reshape(sysm.n, 3)
        self.nbrs = sysm.allocate(R)
        init_fn, _, _, _ = self._build(sysm.S)
        Rj, pj = jnp.asarray(R), jnp.asarray(momenta)
        mass = jnp.asarray(sysm.masses)[:, None]
        e, g = _FN_CACHE[(sysm.key, "value_and_grad", sysm.S)](Rj, neighbor=self.nbrs)
        key = jax.random.PRNGKey(self.seed)
        if self.ensemble == "nve":  # the state jax-md's init_fn builds, from one cached evaluation
            self.state = simulate.NVEState(Rj, pj, -g, mass)
        elif self.thermostat == "langevin":
            self.state = simulate.NVTLangevinState(Rj, pj, -g, mass, jax.random.split(key)[0])
        else:
            self.state = init_fn(key, Rj, mass=mass[:, 0], momenta=pj, neighbor=self.nbrs)
        e = float(e) + sysm.energy_offset
        self.step = 0
        frame = self._frame(0, R, momenta, e, 0.5 * float(np.sum(momenta ** 2 / sysm.masses[:, None])))
        if not np.isfinite(e):
            raise NonFiniteError("the potential energy of the initial structure is not finite", None)
        self.last_good = frame
        return frame

    def _frame(self, step, pos, mom, epot, ekin) -> Frame:
        return Frame(step, step * self.dt_fs, np.asarray(pos), np.asarray(mom), float(epot), float(ekin),
                     2.0 * float(ekin) / (3 * self.system.n * kB()))

    def run(self, n_steps: int) -> Iterator[list[Frame]]:
        """Advance ``n_steps`` (rounded up to a multiple of ``log_every``), yielding the
        recorded frames of each chunk.  Raises :class:`NonFiniteError` on NaN/inf."""
        if self.state is None:
            self.init()
        sysm = self.system
        n_records = -(-int(n_steps) // self.log_every)
        done = 0
        while done < n_records:
            n_rec = min(self.chunk_records, n_records - done)
            state0, nbrs0 = self.state, self.nbrs
            for _attempt in range(20):
                _, _, chunk, _ = self._build(sysm.S)
                state, nbrs, over, (ep, ek, pos, mom) = self._call_chunk(chunk, state0, nbrs0, n_rec)
                if not bool(over):
                    break
                old_k, old_s = nbrs0.idx.shape[1], sysm.S
                nbrs0 = sysm.allocate(state0.position)
                sysm.reallocations += 1
                log.warning("neighbour list overflow during steps %d-%d: reallocated (jax-md capacity %d -> %d, "
                            "species blocks %d -> %d) and repeating the chunk", self.step,
                            self.step + n_rec * self.log_every, old_k, nbrs0.idx.shape[1], old_s, sysm.S)
            else:  # pragma: no cover
                raise RuntimeError("neighbour list kept overflowing after 20 reallocations")
            ep = np.asarray(ep[:n_rec], np.float64) + sysm.energy_offset
            ek = np.asarray(ek[:n_rec], np.float64)
            pos, mom = np.asarray(pos[:n_rec]), np.asarray(mom[:n_rec])
            ok = np.isfinite(ep) & np.isfinite(ek) & np.isfinite(pos).all((1, 2)) & np.isfinite(mom).all((1, 2))
            n_ok = n_rec if ok.all() else int(np.argmin(ok))
            frames = [self._frame(self.step + (i + 1) * self.log_every, pos[i], mom[i], ep[i], ek[i])
                      for i in range(n_ok)]
            if frames:
                self.last_good = frames[-1]
            if n_ok < n_rec:
                bad_step = self.step + (n_ok + 1) * self.log_every
                self.step = self.last_good.step
                if frames:
                    yield frames
                raise NonFiniteError(
                    f"MD stopped: non-finite energy or coordinates by step {bad_step} "
                    f"(t = {bad_step * self.dt_fs:g} fs); the last good frame is step {self.last_good.step} "
                    f"(t = {self.last_good.time_fs:g} fs). A too large time step, atoms colliding or a "
                    "model evaluated far from its training data are the usual causes.", self.last_good)
            self.state, self.nbrs = state, nbrs
            self.step += n_rec * self.log_every
            done += n_rec
            yield frames


# ----------------------------------------------------------------------------- driver
def read_structure(path, index=-1):
    """An ``ase.Atoms`` from any ASE-readable file (xyz, extxyz, cif, POSCAR, ...)."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        return ase.io.read(str(path), index=index)
    except Exception as e:  # ASE raises many types for unreadable files
        raise ValueError(f"cannot read a structure from {path}: {type(e).__name__}: {e}") from e


def _atoms_frame(numbers, cell, pbc, frame: Frame, masses):
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=frame.positions, cell=cell, pbc=pbc)
    atoms.set_masses(masses)
    atoms.set_momenta(frame.momenta)
    atoms.info.update(step=frame.step, time_fs=frame.time_fs, epot_eV=frame.epot, ekin_eV=frame.ekin,
                      etot_eV=frame.etot, temperature_K=frame.temperature)
    return atoms


def plot_log(csv_path, png_path, title: str = ""):
    """Energy (E_pot, E_kin, E_tot relative to their first value) and temperature versus time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.genfromtxt(csv_path, delimiter=",", names=True)
    data = np.atleast_1d(data)
    fig, ax = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    if data.size:
        t = data["time_fs"] / 1000.0
        for key, lab in (("etot_eV", "E_tot"), ("epot_eV", "E_pot"), ("ekin_eV", "E_kin")):
            ax[0].plot(t, (data[key] - data[key][0]) * 1000.0, lw=0.8, label=lab)
        ax[1].plot(t, data["temperature_K"], lw=0.8, color="C3")
    ax[0].set_ylabel("E - E(0) (meV)")
    ax[0].legend(loc="best", fontsize=8)
    ax[1].set(xlabel="time (ps)", ylabel="temperature (K)")
    for a in ax:
        a.grid(alpha=0.3)
    if title:
        ax[0].set_title(title, fontsize=9)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def energy_drift(time_fs, etot_eV, n_atoms: int) -> dict:
    """Linear drift (meV/atom/ps) of the total energy and its RMS fluctuation about the
    linear fit and about the mean (meV/atom)."""
    t = np.asarray(time_fs, np.float64) / 1000.0
    e = np.asarray(etot_eV, np.float64) * 1000.0 / n_atoms
    slope, icpt = np.polyfit(t, e, 1)
    return {"drift_meV_per_atom_per_ps": float(slope),
            "rms_fluctuation_meV_per_atom": float(np.sqrt(np.mean((e - (slope * t + icpt)) ** 2))),
            "std_meV_per_atom": float(np.std(e)),
            "max_abs_deviation_meV_per_atom": float(np.max(np.abs(e - e[0])))}


@dataclasses.dataclass
class MDResult:
    steps: int
    frames: int
    final: Frame
    seconds: float
    interrupted: bool
    traj: Path
    log: Path
    plot: Path
    summary: dict


def run_md(model, structure, *, ensemble="nve", thermostat="langevin", temperature_K=300.0, dt_fs=0.5,
           steps=1000, seed=0, friction=0.01, tau_fs=100.0, log_every=10, traj_every=100, chunk_records=None,
           skin=1.0, precision="float64", traj="md.extxyz", log_path="md.csv", plot="md.png",
           keep_velocities=False, progress=True, extra_energy=None, callback=None,
           last_good_path=None, total_charge=None) -> MDResult:
    """Run MD and write the trajectory (extxyz, every ``traj_every`` steps), the CSV log
    (every ``log_every`` steps, header :data:`CSV_HEADER`) and the PNG plot.  Everything is
    flushed after every chunk; a first Ctrl-C stops cleanly after the current chunk (a
    second one interrupts at once), and the files written so far stay readable.  On a
    NaN, the last good frame is written to ``last_good_path`` (default
    ``<traj>.last_good.extxyz``) and :class:`NonFiniteError` is raised.

    ``structure``: a path or an ``ase.Atoms``.  ``callback(frames)`` is called after each
    chunk (it may raise ``KeyboardInterrupt``).  ``total_charge`` (e): given, else the
    structure's ``charge`` (``atoms.info``, extxyz comment line), else ``None``
    (:func:`lrnn.system.resolve_total_charge`)."""
    import ase.io

    from lrnn.system import resolve_total_charge

    enable_x64()
    pot = _as_potential(model)
    atoms = read_structure(structure) if not hasattr(structure, "get_positions") else structure
    pbc = np.asarray(atoms.pbc, bool)
    cell = np.asarray(atoms.cell.array, np.float64) if pbc.any() else None
    if traj_every % log_every:
        raise ValueError(f"traj_every ({traj_every}) must be a multiple of log_every ({log_every})")
    if total_charge is None:
        total_charge = atoms.info.get("charge", atoms.info.get("total_charge"))
    total_charge = resolve_total_charge(total_charge, atoms.numbers, pot.config.has_charge_terms,
                                        how="total_charge=Q (lrnn md --total-charge Q, or charge=Q in the "
                                            "structure's extxyz comment line)")
    system = MDSystem(pot, atoms.positions, atoms.numbers, cell, pbc if pbc.any() else None, skin=skin,
                      precision=precision, extra_energy=extra_energy, total_charge=total_charge)
    if chunk_records is None:
        chunk_records = 20
    sim = Simulation(system, ensemble=ensemble, thermostat=thermostat, dt_fs=dt_fs, temperature_K=temperature_K,
                     friction=friction, tau_fs=tau_fs, seed=seed, log_every=log_every, chunk_records=chunk_records)
    momenta = atoms.get_momenta() if keep_velocities and atoms.has("momenta") else None
    frame0 = sim.init(np.asarray(atoms.positions), momenta=momenta)
    traj, log_path, plot = Path(traj), Path(log_path), Path(plot)
    for p in (traj, log_path, plot):
        p.parent.mkdir(parents=True, exist_ok=True)
    last_good_path = Path(last_good_path) if last_good_path else traj.with_name(traj.stem + ".last_good.extxyz")
    numbers, a_cell, a_pbc = atoms.numbers, atoms.cell.array.copy(), atoms.pbc.copy()

    stop = {"flag": False}
    old_handler = None

    def on_sigint(signum, frame):  # first Ctrl-C: finish the chunk; second: interrupt now
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True

    try:
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not in the main thread
        old_handler = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(steps), unit="step", desc=f"lrnn md {ensemble}", dynamic_ncols=True)
    t0 = time.perf_counter()
    interrupted = False
    n_frames = 0
    last = frame0
    with open(log_path, "w") as flog, open(traj, "w") as ftraj:
        flog.write(CSV_HEADER + "\n")
        flog.write(f"{frame0.time_fs:.6f},{frame0.epot:.10f},{frame0.ekin:.10f},{frame0.etot:.10f},"
                   f"{frame0.temperature:.6f}\n")
        ase.io.write(ftraj, _atoms_frame(numbers, a_cell, a_pbc, frame0, system.masses), format="extxyz")
        n_frames += 1
        flog.flush()
        ftraj.flush()
        try:
            for frames in sim.run(steps):
                lines = "".join(f"{f.time_fs:.6f},{f.epot:.10f},{f.ekin:.10f},{f.etot:.10f},{f.temperature:.6f}\n"
                                for f in frames)
                flog.write(lines)
                for f in frames:
                    if f.step % traj_every == 0:
                        ase.io.write(ftraj, _atoms_frame(numbers, a_cell, a_pbc, f, system.masses), format="extxyz")
                        n_frames += 1
                flog.flush()
                ftraj.flush()
                if frames:
                    last = frames[-1]
                if bar is not None and frames:
                    bar.update(min(frames[-1].step, int(steps)) - bar.n)
                    bar.set_postfix_str(f"T={last.temperature:.0f} K, E_tot={last.etot:.5f} eV")
                if callback is not None:
                    callback(frames)
                if stop["flag"]:
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        except NonFiniteError as err:
            if err.frame is not None:
                ase.io.write(str(last_good_path), _atoms_frame(numbers, a_cell, a_pbc, err.frame, system.masses),
                             format="extxyz")
            err.args = (f"{err.args[0]} Last good frame written to {last_good_path}.",)
            raise
        finally:
            flog.flush()
            ftraj.flush()
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            try:
                plot_log(log_path, plot, title=f"lrnn md {ensemble}, dt = {dt_fs:g} fs, {system.n} atoms")
            except Exception as e:  # never lose the run for a plot
                log.warning("could not write the plot %s: %s", plot, e)
    seconds = time.perf_counter() - t0
    data = np.atleast_1d(np.genfromtxt(log_path, delimiter=",", names=True))
    summary = {"atoms": system.n, "steps": int(last.step), "time_fs": float(last.time_fs), "seconds": seconds,
               "steps_per_s": last.step / seconds if seconds > 0 else float("nan"),
               "neighbour_reallocations": system.reallocations, "compilations": sim.compilations(),
               "mean_temperature_K": float(np.mean(data["temperature_K"]))}
    if ensemble == "nve" and data.size > 2:
        summary.update(energy_drift(data["time_fs"], data["etot_eV"], system.n))
    return MDResult(int(last.step), n_frames, last, seconds, interrupted, traj, log_path, plot, summary)


def untrained_potential(type_map, model: dict | None = None, *, seed: int = 0, reference=None,
                        output_scale: float = 1.0, dtype: str = "float32"):
    """A randomly initialised :class:`~lrnn.potential.Potential` (for timing and tests):
    ``model`` a model config dict (default: the demo architecture), descriptor statistics
    from ``reference`` (an ``ase.Atoms``) when given, and the last layer of the fitting
    nets scaled by ``output_scale`` (a small value keeps random forces gentle)."""
    from lrnn import models
    from lrnn.batch import make_inputs
    from lrnn.models.deeppot import compute_stats
    from lrnn.nn import split
    from lrnn.potential import Potential
    from lrnn.system import Dataset

    cfg = {"type": "deeppot_se", "rcut": 6.0, "rcut_smth": 0.5, "embed": [16, 32, 64], "axis_neurons": 8,
           "fit": [128, 128, 128]}
    cfg.update(model or {})
    cfg["type_map"] = [int(z) for z in type_map]
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    module = models.create(cfg, seed=seed, dtype=jdt)
    _, mc = models.model_config(cfg)
    if output_scale != 1.0:
        last = module.fitting.n_layers - 1
        w = getattr(module.fitting, f"w{last}")
        w.value = w.value * output_scale
    graphdef, state = split(module)
    t = len(type_map)
    stats = {"s_avg": np.zeros(t), "s_std": np.ones(t), "dir_std": np.ones(t), "n_norm": np.asarray(50.0)}
    if reference is not None:
        pbc = np.asarray(reference.pbc, bool)
        ds = Dataset(reference.positions[None], reference.numbers[None], np.zeros(1),
                     cell=reference.cell.array[None] if pbc.any() else None, pbc=pbc[None])
        inputs, _ = make_inputs(ds, mc, None, dtype=np.float64)
        stats = compute_stats(mc, ds.positions, ds.cell, inputs["layout"])
    meta = {"model": cfg, "dtype": dtype, "stats": {k: np.asarray(v).tolist() for k, v in stats.items()},
            "energy_shift": [0.0] * t, "untrained": True}
    return Potential(meta, graphdef, state)
