"""The user-facing :class:`Potential` (NumPy in, NumPy out) over a model bundle.

A :class:`Potential` is a :class:`lrnn.bundle.Model` with its :class:`lrnn.bundle.Params`
plus host-side bookkeeping (validation, padding buckets, neighbour capacities, O(N) plans).
Its forces and virials come from :func:`lrnn.bundle.efv`, the one function the trainer,
evaluator, MD drivers and ASE calculator share (``energy_forces_virial`` here is that
function on :class:`~lrnn.inputs.ModelInputs`):

.. math::

    F_i = -\\frac{\\partial E}{\\partial R_i}, \\qquad
    W = -\\left.\\frac{\\partial E(R(1+\\varepsilon)^\\top, h(1+\\varepsilon)^\\top)}
    {\\partial \\varepsilon}\\right|_{\\varepsilon=0}

(positions R and cell rows h deformed by the strain ε; the stress is σ = -W / V).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrnn import bundle, memory, models
from lrnn import checkpoint as ckpt
from lrnn import plans as plans_lib
from lrnn.batch import check_boundaries, make_inputs
from lrnn.models.deeppot import compute_stats
from lrnn.neighbors import Capacity, bucket, species_to_types
from lrnn.nn import StackedMLP, split
from lrnn.system import Dataset, resolve_total_charge, symbol_to_number, validate_structure


def enable_x64() -> None:
    """Switch JAX's float64 on (float64 evaluation, MD integration; jax-md truncates to
    float32 otherwise)."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def energy_fn(graphdef, state, stats, inputs):
    """Energy (eV, without per-element shifts) of one structure from :class:`~lrnn.inputs.ModelInputs`
    (:func:`lrnn.bundle.network_energy`)."""
    system, layout, plans = bundle.from_inputs(inputs)
    return bundle.network_energy(graphdef, bundle.Params(state, stats, None), system, layout, plans)


def energy_forces_virial(graphdef, state, stats, inputs, with_charges: bool = False):
    """(E eV, F (N,3) eV/Å, W (3,3) eV) of one structure from a single backward pass;
    with ``with_charges`` also the latent charges (N,) e from the same descriptors
    (:func:`lrnn.bundle.efv` on :class:`~lrnn.inputs.ModelInputs`, without per-element shifts)."""
    system, layout, plans = bundle.from_inputs(inputs)
    r = bundle.efv(graphdef, bundle.Params(state, stats, None), system, layout, plans, with_charges)
    return (r.model_energy, r.forces, r.virial, r.charges) if with_charges else (r.model_energy, r.forces, r.virial)


@functools.partial(jax.jit, static_argnums=0)
def batched_efv(graphdef, state, stats, inputs, plans=None):
    """:func:`energy_forces_virial` vmapped over a leading structure axis.  ``plans``
    (optional dict, e.g. ``{"fmm_plan": …, "sog_plan": …}`` from
    :meth:`Potential.plans_for`, shared by every structure, so use it with one structure) are
    handed to the model's O(N) parts as extra inputs."""
    plans = plans or {}
    return jax.vmap(lambda x: energy_forces_virial(graphdef, state, stats, x.with_plans(plans)))(inputs)


@functools.partial(jax.jit, static_argnums=0)
def committee_efv(graphdef, states, stats, inputs, plans=None):
    """:func:`batched_efv` for a committee: ``states`` stacked on a leading member axis;
    returns (K, M), (K, M, N, 3), (K, M, 3, 3)."""
    plans = plans or {}
    one = lambda st: jax.vmap(lambda x: energy_forces_virial(graphdef, st, stats, x.with_plans(plans)))(inputs)  # noqa: E731
    return jax.vmap(one)(states)


class Potential:
    """A trained potential: NumPy in, NumPy out, Å and eV.

    ``energy_forces(positions, species, cell=None, total_charge=None)`` returns the energy
    (eV, float) and forces (eV/Å, (N, 3)).  ``total_charge`` (e): ``None`` means neutral,
    except that a model with latent-charge terms raises for an odd sum of atomic numbers
    (charged or a radical: pass the charge); see :func:`lrnn.system.resolve_total_charge`.
    Inputs are validated (finite coordinates,
    matching shapes, known species, no atoms closer than 0.1 Å).  Atom counts (multiples of
    ``atom_bucket`` at least) and neighbour capacities are padded to
    :func:`lrnn.neighbors.bucket` sizes, and capacities only grow, so that changing systems
    rarely recompile.
    """

    def __init__(self, meta: dict, model: bundle.Model, params: bundle.Params):
        self.meta = meta
        self.model, self.params = model, params
        self.model_config = model.model_config
        self.config = model.config
        self.dtype = model.dtype
        #: number of committee members (1: a single model)
        self.committee = int(meta.get("committee", 1))
        self.type_map = tuple(self.config.type_map)
        self.capacity: Capacity | None = None
        self.atom_bucket = 8
        self.plans: plans_lib.Plans | None = None  # O(N) plans of the last structure (lrnn.plans)
        self.fmm_replans = 0
        self.sog_replans = 0
        #: the memory an evaluation may use (bytes; None: what the device has free), checked
        #: once per compiled shape before it runs (:mod:`lrnn.memory`)
        self.memory_limit_bytes: int | None = None
        self._memory_checked: set = set()

    # ----------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, path) -> "Potential":
        model, params = bundle.load(path)
        return cls(ckpt.read_meta(path), model, params)

    def reference_energy(self, numbers) -> np.ndarray:
        """Σ_i e_{Z_i} (eV, float64) of each row of atomic numbers (0: padding)."""
        return bundle.reference_energy(self.params, species_to_types(numbers, self.type_map))

    # the parts of the params pytree, by name (read-only views)
    @property
    def graphdef(self):
        return self.model.graphdef

    @property
    def state(self):
        """The network weights (``params.weights``)."""
        return self.params.weights

    @property
    def stats(self) -> dict:
        return self.params.stats

    @property
    def energy_shift(self) -> np.ndarray:
        """Per-element energy shifts (eV, float64), ``type_map`` order."""
        return np.asarray(self.params.energy_shift, np.float64)

    # ---------------------------------------------------------------------------- helpers
    def _dataset(self, positions, species, cell, pbc, total_charge, where="structure"):
        positions = np.asarray(positions, np.float64)
        species = np.asarray(species)
        if species.dtype.kind in "US":
            species = np.array([symbol_to_number(s) for s in species])
        species = species.astype(np.int64)
        validate_structure(positions, species, cell, pbc, where=where, allowed=self.type_map)
        total_charge = resolve_total_charge(total_charge, species, self.config.has_charge_terms)
        n = len(species)
        n_pad = bucket(n, self.atom_bucket)
        pos = np.zeros((1, n_pad, 3))
        pos[0, :n] = positions
        num = np.zeros((1, n_pad), np.int64)
        num[0, :n] = species
        if cell is None:
            cell_a, pbc_a = np.zeros((3, 3)), np.zeros(3, bool)
        else:
            cell_a = np.asarray(cell, np.float64).reshape(3, 3)
            pbc_a = np.ones(3, bool) if pbc is None else np.broadcast_to(np.asarray(pbc, bool), (3,))
        return Dataset(pos, num, np.zeros(1), cell=cell_a[None], pbc=pbc_a[None],
                       total_charge=np.array([total_charge]))

    def _inputs(self, ds, dtype):
        """Inputs with the neighbour capacity grown (reallocated, never shrunk) to fit, in buckets."""
        floor = self.capacity
        inputs, cap = make_inputs(ds, self.config, floor, dtype=dtype)
        if cap != floor:
            cap = cap.bucketed()
            self.capacity = cap if floor is None else floor.max(cap)
            inputs, _ = make_inputs(ds, self.config, self.capacity, dtype=dtype)
        return inputs

    # ------------------------------------------------------------------------- public API
    def calculate(self, positions, species, cell=None, total_charge: float | None = None, pbc=None, *,
                  precision: str | None = None, where: str = "structure") -> dict:
        """Energy (eV), forces (eV/Å), virial (eV) and, with a cell, stress (eV/Å³).
        ``total_charge`` (e): see the class docstring (``None``: neutral unless ambiguous).
        ``precision`` (``"float32"`` or ``"float64"``): the precision of the evaluation,
        default the model's own; float64 evaluates a float32 model with its weights promoted
        exactly.  ``where`` names the structure in error messages."""
        if precision not in (None, "float32", "float64"):
            raise ValueError(f"precision must be float64 or float32, got {precision!r}")
        if precision == "float64":
            enable_x64()
        ds = self._dataset(positions, species, cell, pbc, total_charge, where)
        inputs = self._inputs(ds, np.dtype(precision or self.dtype))
        n = len(np.asarray(species))
        plans = self.plans_for(np.asarray(positions, np.float64), cell)
        inputs = jax.tree.map(jnp.asarray, inputs)
        out = {}
        self._check_memory(committee_efv if self.committee > 1 else batched_efv,
                           (self.graphdef, self.state, self.stats, inputs, plans), n)
        if self.committee > 1:
            e, f, w = committee_efv(self.graphdef, self.state, self.stats, inputs, plans)
            e_k = np.asarray(e, np.float64)[:, 0] + self.reference_energy(ds.numbers)[0]  # (K,)
            f_k = np.asarray(f, np.float64)[:, 0, :n]
            energy, forces, virial = float(e_k.mean()), f_k.mean(0), np.asarray(w, np.float64)[:, 0].mean(0)
            out = committee_spread(e_k, f_k)
        else:
            e, f, w = batched_efv(self.graphdef, self.state, self.stats, inputs, plans)
            energy = float(np.asarray(e, np.float64)[0]) + float(self.reference_energy(ds.numbers)[0])
            forces = np.asarray(f[0], np.float64)[:n]
            virial = np.asarray(w[0], np.float64)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise FloatingPointError("the potential returned a non-finite energy or forces for this structure")
        out.update(energy=energy, forces=forces, virial=virial)
        if cell is not None and abs(np.linalg.det(np.asarray(cell, float))) > 1e-12:
            out["stress"] = -virial / abs(np.linalg.det(np.asarray(cell, float)))
        return out

    def _check_memory(self, fn, args, n_atoms):
        """:class:`lrnn.memory.InsufficientMemory` before a new shape runs, if it cannot fit."""
        leaves, tree = jax.tree.flatten(args[3:])  # the structure's inputs and plans: the params never change shape
        key = (fn, tree, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves),
               self.memory_limit_bytes)
        if key in self._memory_checked:
            return
        hint = ""
        if hasattr(self.config, "chunk_bytes"):
            hint = (f" (the descriptor is computed {self.config.chunk_bytes / 2**20:.0f} MiB at a time: a smaller "
                    "model chunk_bytes lowers the peak; or evaluate in float32, or a smaller system)")
        memory.check(fn.lower(*args).compile(), n_atoms, self.memory_limit_bytes, hint)
        self._memory_checked.add(key)

    def plans_for(self, positions, cell) -> dict:
        """The model inputs of the O(N) parts' plans for this structure (``fmm_plan``,
        ``sog_plan``, ``p3m_mesh``; only those in use): :attr:`plans`, kept while they hold and
        re-allocated (:func:`lrnn.plans.allocate`) when they do not (see :mod:`lrnn.plans`)."""
        widths = plans_lib.sog_widths(self.config, self.state)
        if plans_lib.needs_replan(self.plans, positions, cell, widths, self.config):
            self.plans = plans_lib.allocate(self.config, positions, cell, sog_widths=widths, previous=self.plans)
            self.fmm_replans += self.plans.fmm is not None
            self.sog_replans += self.plans.sog is not None
        return self.plans.inputs()

    @property
    def fmm_plan(self):
        """The FMM plan of the last structure (None: exact sums)."""
        return None if self.plans is None else self.plans.fmm

    @property
    def sog_plan(self):
        """The hierarchical SOG term's plan of the last structure (None: exact sums)."""
        return None if self.plans is None else self.plans.sog

    def energy_forces(self, positions, species, cell=None, total_charge: float | None = None):
        """``(energy_eV, forces_eV_per_A)`` for one structure (NumPy in, NumPy out)."""
        r = self.calculate(positions, species, cell, total_charge)
        return r["energy"], r["forces"]

    @staticmethod
    def compilations() -> int:
        """How many shapes the evaluation function :func:`batched_efv` has compiled in this
        process (all potentials together: compare counts before and after)."""
        return int(batched_efv._cache_size()) + int(committee_efv._cache_size())

    def predict(self, ds: Dataset, batch_size: int = 32):
        """Energies (M,) eV, forces (M, n_max, 3) eV/Å, virials (M, 3, 3) eV for a dataset
        (a committee's mean; :meth:`predict_members` gives each member's)."""
        e, f, w = self.predict_members(ds, batch_size)
        if self.committee > 1:
            return e.mean(0), f.mean(0), w.mean(0)
        return e, f, w

    def predict_members(self, ds: Dataset, batch_size: int = 32):
        """As :meth:`predict`; for a committee with a leading member axis: (K, M), (K, M,
        n_max, 3), (K, M, 3, 3)."""
        ds.validate()
        for z in ds.elements:
            if z not in self.type_map:
                validate_structure(ds.positions[0][:1], np.array([z]), allowed=self.type_map)
        inputs, _ = make_inputs(ds, self.config, None, dtype=np.dtype(self.dtype))
        m = len(ds)
        es, fs, ws = [], [], []
        for start in range(0, m, batch_size):
            idx = np.arange(start, start + batch_size)
            idx = np.minimum(idx, m - 1)  # pad the last batch by repetition: one compiled shape
            chunk = jax.tree.map(lambda x: jnp.asarray(x[idx]), inputs)
            fn = committee_efv if self.committee > 1 else batched_efv
            e, f, w = fn(self.graphdef, self.state, self.stats, chunk)
            k = min(batch_size, m - start)
            es.append(np.asarray(e, np.float64)[..., :k])
            fs.append(np.asarray(f, np.float64)[..., :k, :, :])
            ws.append(np.asarray(w, np.float64)[..., :k, :, :])
        e = np.concatenate(es, axis=-1) + self.reference_energy(ds.numbers).T  # (M,) or (K, M)
        return e, np.concatenate(fs, axis=-3), np.concatenate(ws, axis=-3)

    def __repr__(self):
        return (f"Potential({self.model_config.get('type', 'deeppot_se')}, species Z={list(self.type_map)}, "
                f"rcut={self.config.rcut} Å, dtype={np.dtype(self.dtype).name})")


def committee_spread(e_k, f_k) -> dict:
    r"""A committee's spread: ``energy_std`` (eV), ``forces_std`` (N,) eV/Å per atom,
    :math:`\sqrt{\langle|F_{k,i} - \bar F_i|^2\rangle_k}`, and ``model_deviation`` (eV/Å),
    its maximum over atoms (DP-GEN's max force deviation), from member energies ``e_k``
    (K,) and forces ``f_k`` (K, N, 3)."""
    fstd = np.sqrt(np.mean(np.sum((f_k - f_k.mean(0)) ** 2, axis=-1), axis=0))
    return {"energy_std": float(np.std(e_k)), "forces_std": fstd, "model_deviation": float(fstd.max(initial=0.0)),
            "member_energies": e_k}


def load(path) -> Potential:
    """Load a checkpoint written by ``lrnn train`` (any model lrnn trains)."""
    return Potential.from_checkpoint(Path(path))


def as_potential(model) -> Potential:
    """``model`` itself if it is a :class:`Potential`, else the checkpoint at that path."""
    return model if isinstance(model, Potential) else load(model)


def requires_cell(potential) -> bool:
    """Whether a model can only be evaluated on periodic structures (it was trained on
    periodic data, or one of its terms needs a cell): ``meta["requires_cell"]`` or
    ``meta["periodic"]`` in the checkpoint."""
    meta = getattr(potential, "meta", {}) or {}
    return bool(meta.get("requires_cell") or meta.get("periodic"))


def check_needs_cell(potential, periodic: bool, where: str = "structure") -> None:
    """Raise ``ValueError`` when a model that needs a cell (:func:`requires_cell`) is given
    a structure that is not periodic."""
    if requires_cell(potential) and not periodic:
        raise ValueError(f"{where}: the model was trained on periodic structures and needs a cell; "
                         "give the structure a cell (Lattice= in extxyz, atoms.cell and atoms.pbc in ASE)")


def check_structure(potential, positions, numbers, cell=None, pbc=None, where: str = "structure"):
    """Validate a structure for ``potential``: finite coordinates, known species, no atoms
    closer than 0.1 Å, a cell with volume for periodic structures, a cell at all when the
    model needs one, and boundaries that fit the model's long-range terms
    (:func:`lrnn.batch.check_boundaries`).  Raises ``ValueError`` naming the problem."""
    positions = np.asarray(positions, np.float64)
    numbers = np.asarray(numbers)
    periodic = pbc is not None and bool(np.any(pbc))
    if periodic and cell is None:
        raise ValueError(f"{where}: periodic boundary conditions were requested but no cell was given")
    validate_structure(positions, numbers, cell if periodic else None, pbc if periodic else None, where=where,
                       allowed=potential.type_map)
    if getattr(potential, "config", None) is not None:
        check_boundaries(potential.config, np.broadcast_to(np.asarray(pbc if periodic else False, bool), (3,)))
    check_needs_cell(potential, periodic, where)


def untrained_potential(type_map, model: dict | None = None, *, seed: int = 0, reference=None,
                        output_scale: float = 1.0, term_scale: float | None = None,
                        dtype: str = "float32") -> Potential:
    """A randomly initialised :class:`Potential` (for timing and tests): ``model`` a model
    config dict (default: the demo architecture), descriptor statistics from ``reference``
    (an ``ase.Atoms``) when given, and the last layer of the fitting nets scaled by
    ``output_scale`` (a small value keeps random forces gentle), and the output layers of
    the long-range terms' nets (latent charges) by ``term_scale`` (default ``output_scale``)."""
    cfg = {"type": "deeppot_se", "rcut": 6.0, "rcut_smth": 0.5, "embed": [16, 32, 64], "axis_neurons": 8,
           "fit": [128, 128, 128]}
    cfg.update(model or {})
    cfg["type_map"] = [int(z) for z in type_map]
    if dtype == "float64":
        enable_x64()  # else the weights would be drawn, silently, in float32
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    module = models.create(cfg, seed=seed, dtype=jdt)
    _, mc = models.model_config(cfg)
    term_scale = output_scale if term_scale is None else term_scale
    nets = [(module.fitting, output_scale)] + [(m.net, term_scale) for _, m in nnx.iter_modules(module)
                                               if isinstance(getattr(m, "net", None), StackedMLP)]
    for net, scale in nets:  # the output layers of the fitting net and of the terms' nets (latent charges)
        if scale != 1.0:
            w = getattr(net, f"w{net.n_layers - 1}")
            w[...] = w[...] * scale
    _, state = split(module)
    t = len(type_map)
    stats = {"s_avg": np.zeros(t), "s_std": np.ones(t), "dir_std": np.ones(t), "n_norm": np.asarray(50.0)}
    if reference is not None:
        pbc = np.asarray(reference.pbc, bool)
        ds = Dataset(reference.positions[None], reference.numbers[None], np.zeros(1),
                     cell=reference.cell.array[None] if pbc.any() else None, pbc=pbc[None])
        inputs, _ = make_inputs(ds, mc, None, dtype=np.float64)
        stats = compute_stats(mc, ds.positions, ds.cell, inputs.layout)
    meta = {"model": cfg, "dtype": dtype, "stats": {k: np.asarray(v).tolist() for k, v in stats.items()},
            "energy_shift": [0.0] * t, "untrained": True}
    params = bundle.Params(state, {k: jnp.asarray(v, jdt) for k, v in stats.items()}, np.zeros(t))
    return Potential(meta, bundle.model(cfg, dtype), params)
