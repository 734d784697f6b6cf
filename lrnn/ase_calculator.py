"""An ASE calculator for lrnn potentials: energy (eV), forces (eV/Å) and stress (eV/Å³).

>>> from lrnn.ase_calculator import LrnnCalculator
>>> atoms.calc = LrnnCalculator("runs/demo/checkpoint")
>>> atoms.get_potential_energy(), atoms.get_forces()

The calculator is a thin layer over :meth:`lrnn.potential.Potential.calculate`, which
pads atom counts to size buckets (multiples of max(8, 2^(⌊log2 n⌋-3)): at most 12.5 %
padding, :func:`lrnn.neighbors.bucket`) and only grows neighbour capacities, in buckets,
so a changing atom count or a moving structure does not recompile at every call;
:attr:`LrnnCalculator.compilations` counts the compiled shapes.  Works with ASE optimisers
(``BFGS``, ``FIRE``) and MD (``VelocityVerlet``, ``Langevin``).

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

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from lrnn.potential import Potential, as_potential, check_needs_cell, enable_x64
from lrnn.system import resolve_total_charge


def _info_charge(atoms):
    """The total charge (e) an ``ase.Atoms`` carries in ``info`` (``charge`` or
    ``total_charge``), or None."""
    info = atoms.info
    q = info.get("charge")
    return info.get("total_charge") if q is None else q


class LrnnCalculator(Calculator):
    """ASE calculator for a checkpoint path or a :class:`~lrnn.potential.Potential`
    (``atom_bucket``, when given, sets the potential's smallest atom-count bucket).  For a
    committee the energy and forces are the members' mean, and ``results`` also holds
    ``energy_std`` (eV), ``forces_std`` (N,) (eV/Å, per atom) and ``model_deviation``
    (eV/Å, the largest per-atom force deviation)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, *, precision: str = "float64", total_charge: float | None = None,
                 atom_bucket: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be float64 or float32, got {precision!r}")
        if precision == "float64":
            enable_x64()
        self.potential: Potential = as_potential(model)
        self.precision = precision
        self.total_charge = None if total_charge is None else resolve_total_charge(total_charge, [], False)
        if atom_bucket is not None:
            self.potential.atom_bucket = int(atom_bucket)
        self._compilations = 0

    @property
    def compilations(self) -> int:
        """Number of shapes this calculator's calls compiled so far."""
        return self._compilations

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes, plus ``charge`` when the total charge in ``atoms.info`` changed."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and _info_charge(atoms) != _info_charge(self.atoms):
            changes = list(changes) + ["charge"]
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pot = self.potential
        pbc = np.asarray(atoms.pbc, bool)
        cell = np.asarray(atoms.cell.array, np.float64) if pbc.any() else None
        numbers = np.asarray(atoms.numbers)
        check_needs_cell(pot, bool(pbc.any()), where="atoms")
        charge = _info_charge(atoms)
        charge = resolve_total_charge(self.total_charge if charge is None else charge, numbers,
                                      pot.config.has_charge_terms, how='atoms.info["charge"] = Q')
        before = Potential.compilations()
        r = pot.calculate(np.asarray(atoms.positions, np.float64), numbers, cell, charge, pbc,
                          precision=self.precision, where="atoms")
        self._compilations += Potential.compilations() - before
        self.results["energy"] = self.results["free_energy"] = r["energy"]
        self.results["forces"] = r["forces"]
        for key in ("energy_std", "forces_std", "model_deviation"):  # a committee's spread (eV, eV/Å)
            if key in r:
                self.results[key] = r[key]
        if pbc.all():
            s = -r["virial"] / abs(np.linalg.det(cell))
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
