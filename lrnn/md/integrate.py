"""Integration in jitted chunks: :func:`make_chunk` (pure) and :class:`Simulation`.

NVE (velocity Verlet, :func:`jax_md.simulate.nve`) and NVT (Langevin BAOAB,
:func:`jax_md.simulate.nvt_langevin`; Nosé–Hoover chain,
:func:`jax_md.simulate.nvt_nose_hoover`) run in chunks of ``lax.fori_loop`` steps,
recording potential and kinetic energy every ``log_every`` steps.  The integrator state
carries the jax-md neighbour list and the long-range plans (:mod:`lrnn.plans`: FMM and
hierarchical SOG layouts), both updated after every step.  A step after which either
overflowed (the jax-md list, the species blocks of :class:`~lrnn.md.system.MDSystem`, or a
plan that no longer holds) is dropped and the chunk stops at the step before;
:class:`Simulation` re-allocates what overflowed on the host from that state (quietly for
plans, which go stale as atoms move; with a warning for neighbour capacity) and goes on:
nothing is silently truncated and long-range terms stay O(N) through the run.  Non-finite
values stop the run with :class:`NonFiniteError`, which carries the last good frame.

The jitted chunk :func:`run_chunk` takes everything static (system, capacity, ensemble,
buffer size) as hashable arguments and the time step, temperature and network arrays as
runtime arguments, so jit's own cache is the only cache: a new :class:`Simulation` of the
same system, or of another system of the same structure and architecture, reuses the
compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lrnn import plans as plans_lib
from lrnn.md.system import (
    EnergySpec,
    MDSystem,
    energy,
    energy_and_grad,
    energy_jit,
    jax_md_space,
    overflowed,
)
from lrnn.md.units import enable_x64, fs_to_internal, kB

log = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """The integrator (hashable).  ``kind``: ``"nve"``, ``"langevin"`` (friction ``gamma``
    in inverse internal time units) or ``"nose-hoover"`` (whose chain is built for one
    ``dt`` and ``kT``, so they are part of it; the other kinds take them at run time)."""

    kind: str
    gamma: float = 0.0
    dt: float = 0.0
    kT: float = 0.0
    tau: float = 0.0
    chain_length: int = 0

    def build(self, energy_fn, shift_fn, dt, kT):
        """jax-md's ``(init_fn, apply_fn)`` and the keyword arguments ``apply_fn`` takes."""
        from jax_md import simulate  # heavy (e3nn, rigid bodies): only when MD runs

        if self.kind == "nve":
            return (*simulate.nve(energy_fn, shift_fn, dt), {"dt": dt})
        if self.kind == "langevin":
            return (*simulate.nvt_langevin(energy_fn, shift_fn, dt, kT, gamma=self.gamma), {"dt": dt, "kT": kT})
        return (*simulate.nvt_nose_hoover(energy_fn, shift_fn, self.dt, self.kT, chain_length=self.chain_length,
                                          tau=self.tau), {})


def make_chunk(energy_fn: Callable, shift_fn: Callable, overflowed_fn: Callable, ensemble: Ensemble,
               n_atoms: int, n_records: int) -> Callable:
    """The chunk function ``chunk(state, nbrs, plans, step0, n_rec, log_every, dt, kT) ->
    (state, nbrs, plans, n_steps, n_done, (nbrs_overflowed, plans_overflowed), (step,
    epot, ekin, positions, momenta))``: steps from absolute step ``step0`` on, recording
    at every multiple of ``log_every``, until ``n_rec`` (at most ``n_records``) records are
    taken.  After every step the neighbour list (``overflowed_fn(nbrs)``) and the plans
    (:func:`lrnn.plans.update`) are updated; a step after which either overflowed is
    dropped and the chunk stops there, returning the state, list and plans of the step
    before (``n_steps`` steps and ``n_done`` records done), so that the host re-allocates
    and goes on losing one step.  Pure (it builds the integrator when traced); jit it."""
    def chunk(state, nbrs, plans, step0, n_rec, log_every, dt, kT):
        _, apply_fn, kw = ensemble.build(energy_fn, shift_fn, dt, kT)
        buf = (jnp.zeros(n_records, jnp.int32), jnp.zeros(n_records), jnp.zeros(n_records),
               jnp.zeros((n_records, n_atoms, 3)), jnp.zeros((n_records, n_atoms, 3)))
        no = jnp.zeros((), bool)
        zero = jnp.zeros((), jnp.int32)

        def step(c):
            j, i, st, nb, pl, _, recs = c
            st2 = apply_fn(st, neighbor=nb, plans=pl, **kw)
            nb2 = nb.update(st2.position)
            pl2 = plans_lib.update(pl, st2.position)
            ov = (overflowed_fn(nb2), pl2.did_overflow)
            bad = ov[0] | ov[1]
            take = ~bad & ((step0 + j + 1) % log_every == 0)

            def record(r):
                ks, ep, ek, pos, mom = r
                e = energy_fn(st2.position, neighbor=nb2, plans=pl2)
                k = 0.5 * jnp.sum(st2.momentum ** 2 / st2.mass)
                return (ks.at[i].set(step0 + j + 1), ep.at[i].set(e), ek.at[i].set(k),
                        pos.at[i].set(st2.position), mom.at[i].set(st2.momentum))

            recs = jax.lax.cond(take, record, lambda r: r, recs)
            st, nb, pl = jax.lax.cond(bad, lambda: (st, nb, pl), lambda: (st2, nb2, pl2))
            return j + jnp.where(bad, 0, 1), i + take.astype(jnp.int32), st, nb, pl, ov, recs

        def more(c):
            i, ov = c[1], c[5]
            return (i < n_rec) & ~(ov[0] | ov[1])

        j, i, st, nb, pl, ov, recs = jax.lax.while_loop(more, step, (zero, zero, state, nbrs, plans, (no, no), buf))
        return st, nb, pl, j, i, ov, recs

    return chunk


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def run_chunk(spec: EnergySpec, S: int, ensemble: Ensemble, n_records: int, params, state, nbrs, plans, step0,
              n_rec, log_every, dt, kT):
    """:func:`make_chunk` for an :class:`~lrnn.md.system.MDSystem`'s energy (``spec``,
    capacity ``S``, ``params``), jitted."""
    chunk = make_chunk(functools.partial(energy, spec, S, params), spec.shift_fn,
                       lambda nb: overflowed(spec, nb, S), ensemble, spec.n, n_records)
    return chunk(state, nbrs, plans, step0, n_rec, log_every, dt, kT)


def clear_caches() -> None:
    """Forget the jax-md spaces and the compiled energy and chunk functions."""
    jax_md_space.cache_clear()
    for f in (run_chunk, energy_jit, energy_and_grad):
        f.clear_cache()


class Simulation:
    """Chunked jax-md MD for an :class:`~lrnn.md.system.MDSystem` (see the module docstring).

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
        if ensemble == "nve":
            self.integrator = Ensemble("nve")
        elif thermostat == "langevin":
            self.integrator = Ensemble("langevin", gamma=self.friction / fs_to_internal(1.0))
        else:
            self.integrator = Ensemble("nose-hoover", dt=self.dt, kT=self.kT, tau=fs_to_internal(self.tau_fs),
                                       chain_length=self.chain_length)
        self._compiled: dict = {}  # chunk variant (capacities) -> compilations counted for it
        self.state = None
        self.nbrs = None
        self.plans = None  # lrnn.plans.Plans of the current state
        self.step = 0
        self.last_good: Frame | None = None

    # ------------------------------------------------------------------ building blocks
    def _call_chunk(self, state, nbrs, plans, n_rec):
        sysm = self.system
        before = run_chunk._cache_size()
        out = run_chunk(sysm.spec, sysm.S, self.integrator, self.chunk_records, sysm.params, state, nbrs, plans,
                        jnp.asarray(self.step, jnp.int32), jnp.asarray(n_rec, jnp.int32), jnp.asarray(self.log_every, jnp.int32),
                        jnp.asarray(self.dt, jnp.float32), jnp.asarray(self.kT, jnp.float64))
        new = run_chunk._cache_size() - before
        variant = (sysm.S, nbrs.idx.shape, jax.tree.structure(plans),
                   tuple(np.shape(x) for x in jax.tree.leaves(plans)))
        # a variant counts once whether it was compiled now or by an earlier simulation of
        # the same system; compiling a variant already in use again is a recompilation
        self._compiled[variant] = self._compiled[variant] + new if variant in self._compiled else max(new, 1)
        return out

    def compilations(self) -> int:
        """How many times the chunk functions this simulation used were compiled (all
        capacities together; compilations shared with earlier simulations of the same
        system count too)."""
        return sum(self._compiled.values())

    # ------------------------------------------------------------------ public API
    def init(self, positions=None, momenta=None, temperature_K: float | None = None) -> Frame:
        """Set the initial state.  ``momenta`` (amu·Å/ASE time unit) default to
        Maxwell–Boltzmann at ``temperature_K`` (default: the simulation temperature)."""
        from jax_md import simulate  # heavy: only when MD runs

        sysm = self.system
        R = sysm.wrap(sysm.positions0 if positions is None else positions)
        if momenta is None:
            t = self.temperature_K if temperature_K is None else temperature_K
            momenta = initial_momenta(sysm.masses, t, self.seed)
        momenta = np.asarray(momenta, np.float64).reshape(sysm.n, 3)
        self.nbrs = sysm.allocate(R)
        self.plans = sysm.allocate_plans(R)
        Rj, pj = jnp.asarray(R), jnp.asarray(momenta)
        mass = jnp.asarray(sysm.masses)[:, None]
        e, g = energy_and_grad(sysm.spec, sysm.S, sysm.params, Rj, self.nbrs, self.plans)
        key = jax.random.PRNGKey(self.seed)
        if self.ensemble == "nve":  # the state jax-md's init_fn builds, from one compiled evaluation
            self.state = simulate.NVEState(Rj, pj, -g, mass)
        elif self.thermostat == "langevin":
            self.state = simulate.NVTLangevinState(Rj, pj, -g, mass, jax.random.split(key)[0])
        else:
            init_fn, _, _ = self.integrator.build(sysm.energy_fn, sysm.shift_fn, self.dt, self.kT)
            self.state = init_fn(key, Rj, mass=mass[:, 0], momenta=pj, neighbor=self.nbrs, plans=self.plans)
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
        done, stalled = 0, 0
        while done < n_records:
            n_rec = min(self.chunk_records, n_records - done)
            state, nbrs, plans, n_steps_done, n_ok, (over_n, over_p), (ks, ep, ek, pos, mom) = self._call_chunk(
                self.state, self.nbrs, self.plans, n_rec)
            n_ok, n_steps_done = int(n_ok), int(n_steps_done)
            ks = np.asarray(ks[:n_ok])
            ep = np.asarray(ep[:n_ok], np.float64) + sysm.energy_offset
            ek = np.asarray(ek[:n_ok], np.float64)
            pos, mom = np.asarray(pos[:n_ok]), np.asarray(mom[:n_ok])
            ok = np.isfinite(ep) & np.isfinite(ek) & np.isfinite(pos).all((1, 2)) & np.isfinite(mom).all((1, 2))
            n_good = n_ok if ok.all() else int(np.argmin(ok))
            frames = [self._frame(int(ks[i]), pos[i], mom[i], ep[i], ek[i]) for i in range(n_good)]
            if frames:
                self.last_good = frames[-1]
            if n_good < n_ok:
                bad_step = int(ks[n_good])
                self.step = self.last_good.step
                if frames:
                    yield frames
                raise NonFiniteError(
                    f"MD stopped: non-finite energy or coordinates by step {bad_step} "
                    f"(t = {bad_step * self.dt_fs:g} fs); the last good frame is step {self.last_good.step} "
                    f"(t = {self.last_good.time_fs:g} fs). A too large time step, atoms colliding or a "
                    "model evaluated far from its training data are the usual causes.", self.last_good)
            self.state, self.nbrs, self.plans = state, nbrs, plans
            self.step += n_steps_done
            done += n_ok
            stalled = 0 if n_steps_done else stalled + 1
            if stalled > 20:  # pragma: no cover
                raise RuntimeError("the neighbour list or the long-range plans kept overflowing after 20 "
                                   f"re-allocations at step {self.step}")
            if bool(over_n):
                old_k, old_s = self.nbrs.idx.shape[1], sysm.S
                self.nbrs = sysm.allocate(state.position)
                sysm.reallocations += 1
                log.warning("neighbour list overflow after step %d: reallocated (jax-md capacity %d -> %d, "
                            "species blocks %d -> %d) and going on from there", self.step, old_k,
                            self.nbrs.idx.shape[1], old_s, sysm.S)
            if bool(over_p):
                self.plans = sysm.allocate_plans(state.position, previous=self.plans)
                sysm.replans += 1
                log.info("long-range plans re-allocated after step %d", self.step)
            if frames:
                yield frames
