r"""MD units.  lrnn's MD works in eV, Å and amu, so jax-md's time unit is
:math:`\text{Å}\sqrt{\text{amu}/\text{eV}} \approx 10.18` fs (ASE's time unit); time steps
are given in fs and converted here."""

from __future__ import annotations

import numpy as np
from ase import units as ase_units
from ase.data import atomic_masses

from lrnn.potential import enable_x64
from lrnn.units import KB

__all__ = ["enable_x64", "fs_to_internal", "kB", "masses_of"]


def fs_to_internal(dt_fs: float) -> float:
    """A time in fs in jax-md/ASE units (Å·sqrt(amu/eV) ≈ 10.18 fs)."""
    return float(dt_fs) * ase_units.fs


def kB() -> float:
    """The Boltzmann constant in eV/K."""
    return KB


def masses_of(numbers) -> np.ndarray:
    """Atomic masses (amu) from ``ase.data.atomic_masses``."""
    return np.asarray(atomic_masses, np.float64)[np.asarray(numbers, int)]
