"""An ASE calculator for lrnn potentials: energy (eV), forces (eV/Å) and stress (eV/Å³).

>>> from lrnn.ase_calculator import LrnnCalculator
>>> atoms.calc = LrnnCalculator("runs/demo/checkpoint")
>>> atoms.get_potential_energy(), atoms.get_forces()

Atom counts are padded to size buckets (multiples of max(8, 2^(⌊log2 n⌋-3)): at most
12.5 % padding) and neighbour capacities only grow, in buckets, so a changing atom count
or a moving structure does not recompile at every call; :attr:`LrnnCalculator.compilations`
counts the compiled shapes.  Works with ASE optimisers (``BFGS``, ``FIRE``) and MD
(``VelocityVerlet``, ``Langevin``).

``precision="float64"`` (default) evaluates the network in float64 (float32 weights
promoted exactly), which matches :mod:`lrnn.md` to ~1e-12 eV; ``"float32"`` is faster.
The stress is σ = -W/V (ASE sign convention, Voigt order xx yy zz yz xz xy).

The total charge (e) is ``atoms.info["charge"]`` (or ``atoms.info["total_charge"]``), else
the ``total_charge`` given to the constructor, else ``None``: neutral, except that a model
with latent-charge terms raises for an odd sum of atomic numbers (set
``atoms.info["charge"]``); see :func:`lrnn.system.resolve_total_charge`.  Changing it in
``atoms.info`` triggers a new calculation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from lrnn.md import _as_potential, _bucket, check_structure, enable_x64
from lrnn.system import resolve_total_charge


def _info_charge(atoms):
    """The total charge (e) an ``ase.Atoms`` carries in ``info`` (``charge`` or
    ``total_charge``), or None."""
    info = atoms.info
    q = info.get("charge")
    return info.get("total_charge") if q is None else q


class LrnnCalculator(Calculator):
    """ASE calculator for a checkpoint path or a :class:`~lrnn.potential.Potential`."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, *, precision: str = "float64", total_charge: float | None = None, atom_bucket: int = 8,
                 **kwargs):
        super().__init__(**kwargs)
        from lrnn.potential import energy_forces_virial

        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be float64 or float32, got {precision!r}")
        if precision == "float64":
            enable_x64()
        self.potential = pot = _as_potential(model)
        self.precision = precision
        self.np_dtype = np.float64 if precision == "float64" else np.float32
        self.total_charge = None if total_charge is None else resolve_total_charge(total_charge, [], False)
        self.atom_bucket = int(atom_bucket)
        self.capacity = None
        graphdef = pot.graphdef
        self._efv = jax.jit(lambda state, stats, inputs: energy_forces_virial(graphdef, state, stats, inputs))

    @property
    def compilations(self) -> int:
        """Number of distinct shapes compiled so far."""
        return int(self._efv._cache_size())

    def _inputs(self, positions, numbers, cell, pbc, charge):
        from lrnn.batch import make_inputs
        from lrnn.neighbors import Capacity
        from lrnn.system import Dataset

        n = len(numbers)
        n_pad = _bucket(n, self.atom_bucket)
        pos = np.zeros((1, n_pad, 3))
        pos[0, :n] = positions
        num = np.zeros((1, n_pad), np.int64)
        num[0, :n] = numbers
        ds = Dataset(pos, num, np.zeros(1), cell=(cell if cell is not None else np.zeros((3, 3)))[None],
                     pbc=np.asarray(pbc, bool)[None], total_charge=np.array([charge]))
        cfg = self.potential.config
        floor = self.capacity
        inputs, cap = make_inputs(ds, cfg, floor, dtype=self.np_dtype)
        if cap != floor:  # grow (never shrink) the capacity, in buckets, and rebuild
            cap = Capacity(tuple(_bucket(c) if c else 0 for c in cap.centres), _bucket(cap.neighbors))
            self.capacity = cap if floor is None else floor.max(cap)
            inputs, _ = make_inputs(ds, cfg, self.capacity, dtype=self.np_dtype)
        return jax.tree.map(lambda x: jnp.asarray(x[0]), inputs), ds

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes, plus ``charge`` when the total charge in ``atoms.info`` changed."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and _info_charge(atoms) != _info_charge(self.atoms):
            changes = list(changes) + ["charge"]
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from lrnn.models.deeppot import shift_energy

        atoms = self.atoms
        pot = self.potential
        pbc = np.asarray(atoms.pbc, bool)
        cell = np.asarray(atoms.cell.array, np.float64) if pbc.any() else None
        positions = np.asarray(atoms.positions, np.float64)
        numbers = np.asarray(atoms.numbers)
        check_structure(pot, positions, numbers, cell, pbc if pbc.any() else None, where="atoms")
        charge = _info_charge(atoms)
        charge = resolve_total_charge(self.total_charge if charge is None else charge, numbers,
                                      pot.config.has_charge_terms, how='atoms.info["charge"] = Q')
        inputs, ds = self._inputs(positions, numbers, cell, pbc, charge)
        inputs = dict(inputs, **pot.plans_for(positions, cell))  # O(N) parts of large systems
        e, f, w = self._efv(pot.state, pot.stats, inputs)
        n = len(numbers)
        energy = float(np.asarray(e, np.float64)) + float(shift_energy(numbers[None], pot.energy_shift,
                                                                       pot.type_map)[0])
        forces = np.asarray(f, np.float64)[:n]
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise FloatingPointError("the lrnn potential returned a non-finite energy or forces for these atoms")
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = forces
        if pbc.all():
            w = np.asarray(w, np.float64)
            s = -w / abs(np.linalg.det(cell))
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a fully periodic cell")
