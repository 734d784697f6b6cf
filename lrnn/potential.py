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
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrnn import checkpoint as ckpt
from lrnn import models
from lrnn.batch import make_inputs
from lrnn.models.deeppot import shift_energy
from lrnn.neighbors import Capacity
from lrnn.nn import merge, split
from lrnn.system import Dataset, resolve_total_charge, validate_structure


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


#: Relative slack of the FMM plans the Potential builds (see :func:`lrnn.fmm.plan`, ``tol``).
FMM_SKIN = 0.1


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(max(x, 1) / m) * m)


class Potential:
    """A trained potential: NumPy in, NumPy out, Å and eV.

    ``energy_forces(positions, species, cell=None, total_charge=None)`` returns the energy
    (eV, float) and forces (eV/Å, (N, 3)).  ``total_charge`` (e): ``None`` means neutral,
    except that a model with latent-charge terms raises for an odd sum of atomic numbers
    (charged or a radical: pass the charge); see :func:`lrnn.system.resolve_total_charge`.
    Inputs are validated (finite coordinates,
    matching shapes, known species, no atoms closer than 0.1 Å).  Atom counts and
    neighbour capacities are padded to buckets so that changing systems rarely recompile.
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
        self.capacity_bucket = 4
        self.fmm_plan = None  # FMM plan of the last structure (models with FMM parts, large N)
        self.fmm_replans = 0
        self.sog_plan = None  # plan of the hierarchical SOG term for the last structure
        self.sog_replans = 0

    # ----------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, path) -> "Potential":
        meta, leaves, _ = ckpt.load(path)
        if meta.get("dtype") == "float64":
            jax.config.update("jax_enable_x64", True)
        dtype = jnp.float64 if meta.get("dtype") == "float64" else jnp.float32
        module = models.create(meta["model"], dtype=dtype)
        graphdef, template = split(module)
        t_leaves, treedef = jax.tree.flatten(template)
        if len(t_leaves) != len(leaves) or any(a.shape != np.shape(b) for a, b in zip(t_leaves, leaves)):
            raise ckpt.CheckpointError(f"{path}: parameters do not match the model config in lrnn.json")
        state = jax.tree.unflatten(treedef, [jnp.asarray(x, dtype) for x in leaves])
        return cls(meta, graphdef, state)

    # ---------------------------------------------------------------------------- helpers
    def _dataset(self, positions, species, cell, pbc, total_charge, pad_to=None):
        positions = np.asarray(positions, np.float64)
        species = np.asarray(species)
        if species.dtype.kind in "US":
            from lrnn.system import symbol_to_number

            species = np.array([symbol_to_number(s) for s in species])
        species = species.astype(np.int64)
        validate_structure(positions, species, cell, pbc, allowed=self.type_map)
        total_charge = resolve_total_charge(total_charge, species, self.config.has_charge_terms)
        n = len(species)
        n_pad = pad_to or _round_up(n, self.atom_bucket)
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

    def _inputs(self, ds):
        """Inputs with the neighbour capacity grown (reallocated) to fit, in buckets."""
        floor = self.capacity
        inputs, cap = make_inputs(ds, self.config, floor, dtype=np.dtype(self.dtype))
        if cap != floor:
            b = self.capacity_bucket
            cap = Capacity(tuple(_round_up(c, b) for c in cap.centres), _round_up(cap.neighbors, b))
            self.capacity = cap if floor is None else floor.max(cap)
            inputs, _ = make_inputs(ds, self.config, self.capacity, dtype=np.dtype(self.dtype))
        return inputs

    # ------------------------------------------------------------------------- public API
    def calculate(self, positions, species, cell=None, total_charge: float | None = None, pbc=None) -> dict:
        """Energy (eV), forces (eV/Å), virial (eV) and, with a cell, stress (eV/Å³).
        ``total_charge`` (e): see the class docstring (``None``: neutral unless ambiguous)."""
        ds = self._dataset(positions, species, cell, pbc, total_charge)
        inputs = self._inputs(ds)
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
        """The plans of the model's O(N) parts for this structure (``fmm_plan``,
        ``sog_plan``), only those in use; see :meth:`fmm_plan_for`, :meth:`sog_plan_for`."""
        plans = {"fmm_plan": self.fmm_plan_for(positions, cell), "sog_plan": self.sog_plan_for(positions, cell)}
        return {k: v for k, v in plans.items() if v is not None}

    def sog_plan_for(self, positions, cell):
        """A :func:`lrnn.longrange.sog.sog_plan` for the model's SOG term with ``method:
        hierarchical`` and its current widths, kept while the atoms stay within half its
        skin and rebuilt otherwise; None (exact sum) for other models, periodic cells and
        fewer than ``fmm_min_atoms`` atoms."""
        k = self.config.hierarchical_sog_term()
        if k is None or cell is not None or len(positions) < self.config.fmm_min_atoms:
            return None
        from flax import nnx

        from lrnn.longrange import sog

        widths = np.exp(np.asarray(getattr(nnx.merge(self.graphdef, self.state), f"term{k}").log_width[...],
                                   np.float64))
        p = self.sog_plan
        if p is None or sog.sog_needs_replan(p, positions, widths):
            p = self.sog_plan = sog.sog_plan(positions, widths)
            self.sog_replans += 1
        return p

    def fmm_plan_for(self, positions, cell):
        """An FMM plan for the model's FMM parts (far-field or latent Coulomb with
        ``method: fmm``), kept while the atoms stay in their leaves and rebuilt (an O(N)
        check, then NumPy) when they leave; None (exact sums) for models without FMM parts,
        periodic cells, fewer than ``fmm_min_atoms`` atoms, or systems too small for
        leaves as wide as the near-field kernels need."""
        side = self.config.fmm_leaf_side()
        if side is None or cell is not None or len(positions) < self.config.fmm_min_atoms:
            return None
        from lrnn import fmm

        p = self.fmm_plan
        if p is None or p.n != len(positions) or fmm.needs_replan(p, positions):
            # atoms may drift FMM_SKIN of a leaf side out of their leaves before a re-plan
            # (MD steps); pairs in non-adjacent leaves stay >= (1 - FMM_SKIN) leaf sides apart
            p = fmm.plan(positions, order=self.config.fmm_order, min_leaf_side=side / (1 - FMM_SKIN),
                         tol=FMM_SKIN)
            self.fmm_plan, self.fmm_replans = p, self.fmm_replans + 1
        if float(p.leaf_side) * (1 - FMM_SKIN) < side:  # a depth-2 tree is still too fine: exact sums
            return None
        return p

    def energy_forces(self, positions, species, cell=None, total_charge: float | None = None):
        """``(energy_eV, forces_eV_per_A)`` for one structure (NumPy in, NumPy out)."""
        r = self.calculate(positions, species, cell, total_charge)
        return r["energy"], r["forces"]

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
