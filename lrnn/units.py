"""Units and physical constants.

lrnn works internally in **eV** (energy), **Å** (length), **eV/Å** (force) and **e**
(charge).  Every reader converts on load; every report names its unit.

The constants are CODATA 2018 values (as used by ASE 3.23+).  Conversion factors are
expressed as "how many internal units one external unit is", e.g. ``KCAL_MOL`` is the
number of eV in 1 kcal/mol, so ``energy_eV = energy_kcal_mol * KCAL_MOL``.
"""

from __future__ import annotations

# --- energy, in eV ---------------------------------------------------------------------
EV = 1.0
HARTREE = 27.211386245988  # eV per Hartree (CODATA 2018)
KCAL_MOL = 0.0433641043    # eV per kcal/mol (4.184 kJ/mol; 1 eV = 23.0605478 kcal/mol)
KJ_MOL = KCAL_MOL / 4.184
CM1 = HARTREE / 219474.6313632  # eV per cm^-1 (1 Hartree = 219474.63 cm^-1)
MEV = 1e-3

# --- length, in Å -----------------------------------------------------------------------
ANGSTROM = 1.0
BOHR = 0.529177210903  # Å per Bohr (CODATA 2018)
NM = 10.0

# --- other ---------------------------------------------------------------------------------
#: Coulomb constant e^2/(4 pi eps0) in eV·Å.
COULOMB_K = 14.399645
#: Boltzmann constant in eV/K.
KB = 8.617333262e-5
#: Debye in e·Å.
DEBYE = 0.20819434
#: Debye in atomic units (e·Bohr).
DEBYE_AU = 0.393430307
#: Hartree in cm^-1, the spectroscopists' energy unit.
HARTREE_TO_CM1 = 219474.6313705

ENERGY_UNITS = {"eV": EV, "meV": MEV, "kcal/mol": KCAL_MOL, "kJ/mol": KJ_MOL,
                "Hartree": HARTREE, "Ha": HARTREE, "cm-1": CM1, "cm^-1": CM1}
LENGTH_UNITS = {"Angstrom": ANGSTROM, "Ang": ANGSTROM, "Å": ANGSTROM, "A": ANGSTROM, "Bohr": BOHR,
                "bohr": BOHR, "nm": NM}


def energy_factor(unit: str) -> float:
    """eV per one ``unit`` of energy (``"eV"``, ``"kcal/mol"``, ``"Hartree"``, ``"cm-1"`` …)."""
    try:
        return ENERGY_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown energy unit {unit!r}; known: {sorted(ENERGY_UNITS)}") from None


def length_factor(unit: str) -> float:
    """Å per one ``unit`` of length (``"Angstrom"``, ``"Bohr"``, ``"nm"``)."""
    try:
        return LENGTH_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown length unit {unit!r}; known: {sorted(LENGTH_UNITS)}") from None


def convert_energy(value, from_unit: str, to_unit: str):
    """Convert an energy (scalar or array) between named units."""
    return value * (energy_factor(from_unit) / energy_factor(to_unit))


def convert_length(value, from_unit: str, to_unit: str):
    """Convert a length (scalar or array) between named units."""
    return value * (length_factor(from_unit) / length_factor(to_unit))


def force_factor(energy_unit: str, length_unit: str) -> float:
    """eV/Å per one ``energy_unit/length_unit`` of force."""
    return energy_factor(energy_unit) / length_factor(length_unit)
