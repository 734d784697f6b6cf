"""From a :class:`~lrnn.system.Dataset` to model inputs and labels (NumPy, leading axis M)."""

from __future__ import annotations

import numpy as np

from lrnn.inputs import ModelInputs
from lrnn.models.deeppot import shift_energy
from lrnn.neighbors import Capacity, dataset_layouts, species_to_types


def check_boundaries(model_cfg, pbc) -> None:
    """Raise ``ValueError`` naming the term and the fix when a part of the model does not
    fit the boundary conditions: open-boundary parts on a periodic system, or a
    ``method: reciprocal`` term on a system that is not periodic in all three directions.
    ``pbc`` (3,) or (M, 3) booleans; checked outside ``jit`` (cell presence is static)."""
    pbc = np.asarray(pbc, bool).reshape(-1, 3)
    if pbc.any():
        for name in ("far_field", "grid"):
            if getattr(model_cfg, name, ()):
                raise ValueError(f"the {name} descriptor is for open boundaries (a sum over the atoms of one "
                                 "structure, not over periodic images) but the system is periodic; use a "
                                 "periodic long-range term (latent_coulomb or sog with method: reciprocal)")
        for term in getattr(model_cfg, "long_range", ()):
            if not getattr(term, "periodic_ok", True):
                raise ValueError(f"long-range term {term.type!r} with method {getattr(term, 'method', '?')!r} "
                                 "is for open boundaries but the system is periodic; use a periodic method")
    if not pbc.all():
        for term in getattr(model_cfg, "long_range", ()):
            if getattr(term, "needs_cell", False):
                open_methods = {"latent_coulomb": "direct or fmm", "sog": "direct or hierarchical"}.get(
                    term.type, "direct")
                raise ValueError(f"long-range term {term.type!r} with method {term.method!r} needs a periodic "
                                 "cell (pbc in all three directions) but this system is open or only partly "
                                 f"periodic; use method: {open_methods} for open systems, or give the system a "
                                 "periodic cell")


def make_inputs(ds, model_cfg, capacity: Capacity | None = None, dtype=np.float32):
    """Model inputs (:class:`~lrnn.inputs.ModelInputs`, a leading structure axis) for every
    structure of ``ds``: positions (Å), cell (Å), species types, total charge (e) and the
    species-blocked neighbour layout.  Returns (inputs, capacity)."""
    check_boundaries(model_cfg, ds.pbc)
    types = species_to_types(ds.numbers, model_cfg.type_map)
    layout, cap, _ = dataset_layouts(ds.positions, ds.numbers, ds.cell, ds.pbc, model_cfg.type_map,
                                     model_cfg.rcut, model_cfg.neighbor_mode, capacity)
    inputs = ModelInputs(positions=ds.positions.astype(dtype), types=types, cell=ds.cell.astype(dtype),
                         total_charge=ds.total_charge.astype(dtype), layout=layout)
    return inputs, cap


def make_labels(ds, energy_shift, type_map, dtype=np.float32):
    """Training labels: energy minus the per-element shifts (computed in float64 first),
    forces, virial (zeros and ``has_virial`` False where absent), atom counts and mask."""
    resid = ds.energy - shift_energy(ds.numbers, energy_shift, type_map)
    m, n = ds.numbers.shape
    forces = ds.forces if ds.forces is not None else np.zeros((m, n, 3))
    virial = ds.virial if ds.virial is not None else np.zeros((m, 3, 3))
    return {"energy": resid.astype(dtype), "forces": forces.astype(dtype), "virial": virial.astype(dtype),
            "has_forces": np.full(m, ds.forces is not None), "has_virial": np.full(m, ds.virial is not None),
            "n_atoms": ds.n_atoms.astype(dtype), "mask": ds.mask,
            "charges": (ds.charges if ds.charges is not None else np.zeros((m, n))).astype(dtype),
            "has_charges": np.full(m, ds.charges is not None)}
