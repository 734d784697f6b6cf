"""Pure energy/force/virial functions and the user-facing :class:`Potential`.

``energy_forces_virial(graphdef, state, stats, inputs)`` is the one jitted function the
trainer, evaluator, MD drivers and ASE calculator share:

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

from lrnn import checkpoint as ckpt
from lrnn import models
from lrnn import plans as plans_lib
from lrnn.batch import check_boundaries, make_inputs
from lrnn.models.deeppot import compute_stats, shift_energy
from lrnn.neighbors import Capacity, bucket
from lrnn.nn import StackedMLP, merge, split
from lrnn.system import Dataset, resolve_total_charge, symbol_to_number, validate_structure


def enable_x64() -> None:
    """Switch JAX's float64 on (float64 evaluation, MD integration; jax-md truncates to
    float32 otherwise)."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def energy_fn(graphdef, state, stats, inputs):
    """Energy (eV, without per-element shifts) of one structure."""
    return merge(graphdef, state).energy(inputs, stats)


def energy_forces_virial(graphdef, state, stats, inputs, with_charges: bool = False):
    """(E eV, F (N,3) eV/Å, W (3,3) eV) of one structure from a single backward pass;
    with ``with_charges`` also the latent charges (N,) e from the same descriptors."""
    pos, cell = inputs["positions"], inputs["cell"]

    def e_of(p, eps):
        f = jnp.eye(3, dtype=p.dtype) + eps
        x = dict(inputs, positions=p @ f.T, cell=cell @ f.T)
        if with_charges:
            return merge(graphdef, state).energy_and_charges(x, stats)
        return energy_fn(graphdef, state, stats, x), None

    (e, q), (g_pos, g_eps) = jax.value_and_grad(e_of, argnums=(0, 1), has_aux=True)(
        pos, jnp.zeros((3, 3), pos.dtype))
    return (e, -g_pos, -g_eps, q) if with_charges else (e, -g_pos, -g_eps)


@functools.partial(jax.jit, static_argnums=0)
def batched_efv(graphdef, state, stats, inputs, plans=None):
    """:func:`energy_forces_virial` vmapped over a leading structure axis.  ``plans``
    (optional dict, e.g. ``{"fmm_plan": …, "sog_plan": …}`` from
    :meth:`Potential.plans_for`, shared by every structure, so use it with one structure) are
    handed to the model's O(N) parts as extra inputs."""
    plans = plans or {}
    return jax.vmap(lambda x: energy_forces_virial(graphdef, state, stats, dict(x, **plans)))(inputs)


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

    def __init__(self, meta: dict, graphdef, state):
        self.meta = meta
        self.model_config = meta["model"]
        _, self.config = models.model_config(self.model_config)
        self.graphdef, self.state = graphdef, state
        self.dtype = jnp.float64 if meta.get("dtype") == "float64" else jnp.float32
        self.stats = {k: jnp.asarray(v, self.dtype) for k, v in meta["stats"].items()}
        self.energy_shift = np.asarray(meta["energy_shift"], np.float64)
        self.type_map = tuple(self.config.type_map)
        self.capacity: Capacity | None = None
        self.atom_bucket = 8
        self.plans: plans_lib.Plans | None = None  # O(N) plans of the last structure (lrnn.plans)
        self.fmm_replans = 0
        self.sog_replans = 0

    # ----------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, path) -> "Potential":
        meta, leaves, _ = ckpt.load(path)
        if meta.get("dtype") == "float64":
            enable_x64()
        dtype = jnp.float64 if meta.get("dtype") == "float64" else jnp.float32
        module = models.create(meta["model"], dtype=dtype)
        graphdef, template = split(module)
        t_leaves, treedef = jax.tree.flatten(template)
        if len(t_leaves) != len(leaves) or any(a.shape != np.shape(b) for a, b in zip(t_leaves, leaves)):
            raise ckpt.CheckpointError(f"{path}: parameters do not match the model config in lrnn.json")
        state = jax.tree.unflatten(treedef, [jnp.asarray(x, dtype) for x in leaves])
        return cls(meta, graphdef, state)

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
        e, f, w = batched_efv(self.graphdef, self.state, self.stats, jax.tree.map(jnp.asarray, inputs), plans)
        energy = float(np.asarray(e, np.float64)[0]) + float(shift_energy(ds.numbers, self.energy_shift,
                                                                          self.type_map)[0])
        forces = np.asarray(f[0], np.float64)[:n]
        virial = np.asarray(w[0], np.float64)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise FloatingPointError("the potential returned a non-finite energy or forces for this structure")
        out = {"energy": energy, "forces": forces, "virial": virial}
        if cell is not None and abs(np.linalg.det(np.asarray(cell, float))) > 1e-12:
            out["stress"] = -virial / abs(np.linalg.det(np.asarray(cell, float)))
        return out

    def plans_for(self, positions, cell) -> dict:
        """The model inputs of the O(N) parts' plans for this structure (``fmm_plan``,
        ``sog_plan``; only those in use): :attr:`plans`, kept while they hold and
        re-allocated (:func:`lrnn.plans.allocate`) when they do not (see :mod:`lrnn.plans`)."""
        widths = plans_lib.sog_widths(self.config, self.state)
        if plans_lib.needs_replan(self.plans, positions, cell, widths):
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
        return int(batched_efv._cache_size())

    def predict(self, ds: Dataset, batch_size: int = 32):
        """Energies (M,) eV, forces (M, n_max, 3) eV/Å, virials (M, 3, 3) eV for a dataset."""
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
            e, f, w = batched_efv(self.graphdef, self.state, self.stats, chunk)
            k = min(batch_size, m - start)
            es.append(np.asarray(e, np.float64)[:k])
            fs.append(np.asarray(f, np.float64)[:k])
            ws.append(np.asarray(w, np.float64)[:k])
        e = np.concatenate(es) + shift_energy(ds.numbers, self.energy_shift, self.type_map)
        return e, np.concatenate(fs), np.concatenate(ws)

    def __repr__(self):
        return (f"Potential({self.model_config.get('type', 'deeppot_se')}, species Z={list(self.type_map)}, "
                f"rcut={self.config.rcut} Å, dtype={np.dtype(self.dtype).name})")


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
            w.value = w.value * scale
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
