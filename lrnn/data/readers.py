"""Readers for the reference data formats.  Every reader converts to eV, Å, eV/Å on load.

=============  ===========================================  ==========================
reader         format                                        native units
=============  ===========================================  ==========================
read_rmd17     rMD17 npz (nuclear_charges, coords, …)       Å, kcal/mol, kcal/mol/Å
read_sgdml     sGDML MD17/MD22 npz (R, z, E, F)             Å, kcal/mol (or e_unit/r_unit)
read_extxyz    extended XYZ through ASE                     user-given (default eV, Å)
read_runner    RuNNer ``input.data`` (4G-HDNNP sets)        Bohr, Hartree, Hartree/Bohr
read_lode_h5   LODE dimers as shipped with SOG-Net (h5)     Å, eV, eV/Å
=============  ===========================================  ==========================
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lrnn import units
from lrnn.system import Dataset, symbol_to_number


def _check_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"data file is empty: {path}")
    return path


def _npz(path):
    try:
        return np.load(_check_file(path), allow_pickle=False)
    except (OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"cannot read {path} as an npz archive: {e}") from e


def read_rmd17(path, name: str | None = None) -> Dataset:
    """Revised MD17 npz (Christensen & von Lilienfeld 2020): kcal/mol and Å → eV, Å."""
    d = _npz(path)
    missing = {"nuclear_charges", "coords", "energies", "forces"} - set(d.files)
    if missing:
        raise ValueError(f"{path}: not an rMD17 file, missing keys {sorted(missing)}")
    e = units.KCAL_MOL
    return Dataset(d["coords"], d["nuclear_charges"], d["energies"] * e, forces=d["forces"] * e,
                   name=name or Path(path).stem, source=str(path))


def read_sgdml(path, name: str | None = None) -> Dataset:
    """sGDML MD17/MD22 npz (keys R, z, E, F).  Units from ``e_unit``/``r_unit`` when the
    file states them, else kcal/mol and Å (the sGDML convention)."""
    d = _npz(path)
    missing = {"R", "z", "E"} - set(d.files)
    if missing:
        raise ValueError(f"{path}: not an sGDML file, missing keys {sorted(missing)}")
    e_unit = str(d["e_unit"]) if "e_unit" in d.files else "kcal/mol"
    r_unit = str(d["r_unit"]) if "r_unit" in d.files else "Angstrom"
    ef, rf = units.energy_factor(e_unit), units.length_factor(r_unit)
    forces = d["F"] * ef / rf if "F" in d.files else None
    return Dataset(d["R"] * rf, d["z"], np.asarray(d["E"]).reshape(-1) * ef, forces=forces,
                   name=name or Path(path).stem, source=str(path))


def read_extxyz(path, energy_unit: str = "eV", length_unit: str = "Angstrom", index=":",
                energy_key: str | None = None, name: str | None = None) -> Dataset:
    """Extended XYZ through ASE.  Energies from the calculator or ``info[energy_key]``
    (``energy``/``Energy`` by default), forces from ``forces``, virial from ``virial`` or
    stress; converted from ``energy_unit``/``length_unit``."""
    from ase.io import read as ase_read

    frames = ase_read(_check_file(path), index=index)
    if not isinstance(frames, list):
        frames = [frames]
    return from_atoms(frames, energy_unit, length_unit, energy_key, name or Path(path).stem, str(path))


def from_atoms(frames, energy_unit="eV", length_unit="Angstrom", energy_key=None, name="atoms",
               source="") -> Dataset:
    """Build a :class:`Dataset` from a list of :class:`ase.Atoms`."""
    if len(frames) == 0:
        raise ValueError(f"{name}: no structures")
    ef, lf = units.energy_factor(energy_unit), units.length_factor(length_unit)
    n_max = max(len(a) for a in frames)
    m = len(frames)
    pos, num = np.zeros((m, n_max, 3)), np.zeros((m, n_max), np.int32)
    energy, forces = np.full(m, np.nan), np.zeros((m, n_max, 3))
    cell, pbc, charge = np.zeros((m, 3, 3)), np.zeros((m, 3), bool), np.zeros(m)
    have_forces, virial, have_virial = True, np.zeros((m, 3, 3)), True
    for k, a in enumerate(frames):
        n = len(a)
        pos[k, :n] = a.positions * lf
        num[k, :n] = a.numbers
        cell[k] = np.asarray(a.cell) * lf
        pbc[k] = a.pbc
        info = {key.lower(): v for key, v in a.info.items()}
        e = None
        if energy_key is not None:
            e = a.info.get(energy_key)
        elif a.calc is not None and "energy" in a.calc.results:
            e = a.calc.results["energy"]
        elif "energy" in info:
            e = info["energy"]
        if e is not None:
            energy[k] = float(e) * ef
        f = None
        if a.calc is not None and "forces" in a.calc.results:
            f = a.calc.results["forces"]
        elif "forces" in a.arrays:
            f = a.arrays["forces"]
        if f is None:
            have_forces = False
        else:
            forces[k, :n] = np.asarray(f) * ef / lf
        if "virial" in info:
            virial[k] = np.asarray(info["virial"], float).reshape(3, 3) * ef
        elif a.calc is not None and "stress" in a.calc.results and a.pbc.all():
            from ase.stress import voigt_6_to_full_3x3_stress

            s = np.asarray(a.calc.results["stress"])
            s = voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)
            virial[k] = -s * a.get_volume() * ef  # W = -σ V
        else:
            have_virial = False
        charge[k] = float(info.get("charge", info.get("total_charge", 0.0)))
    return Dataset(pos, num, energy, forces if have_forces else None, cell, pbc,
                   virial if have_virial else None, charge, name=name, source=source)


def read_runner(path, name: str | None = None) -> Dataset:
    """RuNNer ``input.data`` (used by n2p2 and the 4G-HDNNP sets).

    Blocks ``begin`` … ``end`` with ``lattice ax ay az`` (3×, optional),
    ``atom x y z element charge energy fx fy fz``, ``energy E``, ``charge Q``.
    Bohr, Hartree, Hartree/Bohr → Å, eV, eV/Å; reference atomic charges (e) kept."""
    path = _check_file(path)
    structs, cur = [], None
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            tok = line.split()
            if not tok:
                continue
            key = tok[0]
            try:
                if key == "begin":
                    cur = {"lattice": [], "atoms": [], "energy": None, "charge": 0.0}
                elif cur is None:
                    raise ValueError(f"'{key}' outside a begin/end block")
                elif key == "lattice":
                    cur["lattice"].append([float(x) for x in tok[1:4]])
                elif key == "atom":
                    cur["atoms"].append((float(tok[1]), float(tok[2]), float(tok[3]), tok[4], float(tok[5]),
                                         float(tok[7]), float(tok[8]), float(tok[9])))
                elif key == "energy":
                    cur["energy"] = float(tok[1])
                elif key == "charge":
                    cur["charge"] = float(tok[1])
                elif key == "end":
                    if cur["energy"] is None or not cur["atoms"]:
                        raise ValueError("structure without energy or atoms")
                    if cur["lattice"] and len(cur["lattice"]) != 3:
                        raise ValueError(f"{len(cur['lattice'])} lattice lines, expected 3")
                    structs.append(cur)
                    cur = None
            except (IndexError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: malformed RuNNer line ({e}): {line.strip()!r}") from e
    if cur is not None:
        raise ValueError(f"{path}: file ends inside a begin/end block (truncated?)")
    if not structs:
        raise ValueError(f"{path}: no structures found")
    m, n_max = len(structs), max(len(s["atoms"]) for s in structs)
    b, h = units.BOHR, units.HARTREE
    pos, num = np.zeros((m, n_max, 3)), np.zeros((m, n_max), np.int32)
    forces, q = np.zeros((m, n_max, 3)), np.zeros((m, n_max))
    cell, pbc = np.zeros((m, 3, 3)), np.zeros((m, 3), bool)
    energy, charge = np.zeros(m), np.zeros(m)
    for k, s in enumerate(structs):
        a = s["atoms"]
        n = len(a)
        pos[k, :n] = np.array([x[:3] for x in a]) * b
        num[k, :n] = [symbol_to_number(x[3]) for x in a]
        q[k, :n] = [x[4] for x in a]
        forces[k, :n] = np.array([x[5:8] for x in a]) * h / b
        if s["lattice"]:
            cell[k] = np.array(s["lattice"]) * b
            pbc[k] = True
        energy[k] = s["energy"] * h
        charge[k] = s["charge"]
    return Dataset(pos, num, energy, forces, cell, pbc, None, charge, q,
                   name=name or Path(path).name.replace("_input.data", ""), source=str(path))


#: species codes of the LODE dimer files (SOG-Net): 1=C, 2=N, 3=H, 4=O, 0=padding
LODE_SPECIES = {0: 0, 1: 6, 2: 7, 3: 1, 4: 8}


def read_lode_h5(path, box: float = 30.0, periodic: bool = False, name: str | None = None) -> Dataset:
    """LODE molecular dimers (Grisafi & Ceriotti) as shipped with SOG-Net: h5 with
    ``points`` (Å), ``energy`` (eV), ``forces`` (eV/Å) and species codes in ``charges``
    (1=C, 2=N, 3=H, 4=O, 0=padding).  The data were computed in a ``box`` Å cubic cell;
    ``periodic=True`` keeps that cell, else the dimers are treated as free molecules."""
    import h5py

    path = _check_file(path)
    try:
        with h5py.File(path, "r") as f:
            missing = {"points", "energy", "forces", "charges"} - set(f.keys())
            if missing:
                raise ValueError(f"{path}: not a LODE dimer file, missing {sorted(missing)}")
            pts, e = f["points"][()], f["energy"][()].reshape(-1)
            frc, codes = f["forces"][()], f["charges"][()].reshape(pts.shape[:2]).astype(int)
    except OSError as err:
        raise ValueError(f"cannot read {path} as HDF5: {err}") from err
    unknown = set(np.unique(codes)) - set(LODE_SPECIES)
    if unknown:
        raise ValueError(f"{path}: unknown species codes {sorted(unknown)}")
    numbers = np.vectorize(LODE_SPECIES.get)(codes)
    m = len(e)
    cell = np.broadcast_to(np.eye(3) * box, (m, 3, 3)) if periodic else None
    pbc = np.ones((m, 3), bool) if periodic else None
    pts = np.where(numbers[..., None] > 0, pts, 0.0)
    frc = np.where(numbers[..., None] > 0, frc, 0.0)
    return Dataset(pts, numbers, e, frc, cell, pbc, name=name or Path(path).stem, source=str(path))


def arrays_sha256(arrays, keys=("R", "z", "E", "F")) -> str:
    """sha256 over the bytes of an sGDML-format set's arrays (``keys``, in that order, as stored:
    dtype included): equal digests mean the same frames, while the npz file's own bytes may
    differ (compression, metadata).  ``arrays`` is a mapping, such as ``np.load(path)``."""
    h = hashlib.sha256()
    for k in keys:
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def read(path, fmt: str | None = None, **kwargs) -> Dataset:
    """Read any supported file, choosing the reader from ``fmt`` or the file name."""
    p = str(path)
    if fmt is None:
        base = os.path.basename(p)
        if p.endswith(".npz"):
            keys = set(_npz(p).files)
            fmt = "rmd17" if "nuclear_charges" in keys else "sgdml"
        elif p.endswith((".h5", ".hdf5")):
            fmt = "lode"
        elif base.endswith("input.data") or base.endswith(".data"):
            fmt = "runner"
        else:
            fmt = "extxyz"
    readers = {"rmd17": read_rmd17, "sgdml": read_sgdml, "extxyz": read_extxyz, "xyz": read_extxyz,
               "runner": read_runner, "lode": read_lode_h5}
    if fmt not in readers:
        raise ValueError(f"unknown data format {fmt!r}; known: {sorted(readers)}")
    return readers[fmt](path, **kwargs)
