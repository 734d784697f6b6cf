"""Systems and datasets: padded arrays in eV and Å, and input validation.

A :class:`Dataset` holds ``M`` structures padded to ``n_max`` atoms (host-side NumPy):

=================  ================  ==================================================
field              shape             meaning (unit)
=================  ================  ==================================================
``positions``      (M, n_max, 3)     Cartesian coordinates (Å)
``numbers``        (M, n_max)        atomic numbers, 0 marks a padding slot
``cell``           (M, 3, 3)         cell vectors as rows (Å); zeros for free space
``pbc``            (M, 3)            periodicity per cell vector
``energy``         (M,)              total energy (eV), NaN where unlabelled
``forces``         (M, n_max, 3)     forces (eV/Å) or ``None``
``virial``         (M, 3, 3)         virial W = -dE/dε (eV) or ``None``
``total_charge``   (M,)              net charge (e)
``charges``        (M, n_max)        reference atomic charges (e) or ``None``
=================  ================  ==================================================

Every reader in :mod:`lrnn.data` converts into these units on load.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

MIN_DISTANCE = 0.1  # Å: closer atoms are rejected as overlapping

_SYMBOLS = None


def chemical_symbols():
    global _SYMBOLS
    if _SYMBOLS is None:
        from ase.data import chemical_symbols as cs

        _SYMBOLS = list(cs)
    return _SYMBOLS


def symbol_to_number(symbol: str) -> int:
    try:
        return chemical_symbols().index(symbol)
    except ValueError:
        raise ValueError(f"unknown chemical symbol {symbol!r}") from None


@dataclasses.dataclass
class Dataset:
    """A padded set of structures with labels, in eV and Å (see module docstring)."""

    positions: np.ndarray
    numbers: np.ndarray
    energy: np.ndarray
    forces: Optional[np.ndarray] = None
    cell: Optional[np.ndarray] = None
    pbc: Optional[np.ndarray] = None
    virial: Optional[np.ndarray] = None
    total_charge: Optional[np.ndarray] = None
    charges: Optional[np.ndarray] = None
    name: str = "dataset"
    source: str = ""

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.numbers = np.asarray(self.numbers, dtype=np.int32)
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise ValueError(f"positions must have shape (M, n_atoms, 3), got {self.positions.shape}")
        m, n = self.positions.shape[:2]
        if self.numbers.ndim == 1:
            self.numbers = np.broadcast_to(self.numbers, (m, len(self.numbers))).copy()
        if self.numbers.shape != (m, n):
            raise ValueError(f"numbers shape {self.numbers.shape} does not match positions {(m, n)}")
        self.energy = np.asarray(self.energy, dtype=np.float64).reshape(-1)
        if self.energy.shape != (m,):
            raise ValueError(f"energy must have one value per structure ({m}), got {self.energy.shape}")
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
            if self.forces.shape != (m, n, 3):
                raise ValueError(f"forces shape {self.forces.shape} does not match positions {(m, n, 3)}")
        self.cell = np.zeros((m, 3, 3)) if self.cell is None else np.asarray(self.cell, np.float64)
        if self.cell.shape == (3, 3):
            self.cell = np.broadcast_to(self.cell, (m, 3, 3)).copy()
        if self.cell.shape != (m, 3, 3):
            raise ValueError(f"cell must have shape (M, 3, 3) or (3, 3), got {self.cell.shape}")
        if self.pbc is None:
            self.pbc = np.zeros((m, 3), bool)
        self.pbc = np.asarray(self.pbc, bool)
        if self.pbc.shape == (3,):
            self.pbc = np.broadcast_to(self.pbc, (m, 3)).copy()
        if self.virial is not None:
            self.virial = np.asarray(self.virial, np.float64).reshape(m, 3, 3)
        self.total_charge = (np.zeros(m) if self.total_charge is None
                             else np.asarray(self.total_charge, np.float64).reshape(m))
        if self.charges is not None:
            self.charges = np.asarray(self.charges, np.float64).reshape(m, n)

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return self.positions.shape[0]

    @property
    def n_max(self) -> int:
        return self.positions.shape[1]

    @property
    def mask(self) -> np.ndarray:
        return self.numbers > 0

    @property
    def n_atoms(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    @property
    def elements(self) -> list[int]:
        return sorted(int(z) for z in np.unique(self.numbers) if z > 0)

    @property
    def is_periodic(self) -> bool:
        return bool(self.pbc.any())

    def subset(self, idx) -> "Dataset":
        idx = np.asarray(idx)
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        return Dataset(self.positions[idx], self.numbers[idx], self.energy[idx], take(self.forces),
                       self.cell[idx], self.pbc[idx], take(self.virial), self.total_charge[idx],
                       take(self.charges), name=self.name, source=self.source)

    def describe(self) -> str:
        return (f"{self.name}: {len(self)} structures, {int(self.n_atoms.min())}-{int(self.n_atoms.max())} "
                f"atoms, elements {self.elements}, periodic={self.is_periodic}, "
                f"forces={'yes' if self.forces is not None else 'no'} (eV, Å)")

    def validate(self, *, require_forces: bool = False) -> "Dataset":
        """Check the data for the problems that would otherwise give NaNs or silent nonsense."""
        if len(self) == 0:
            raise ValueError(f"dataset {self.name!r} is empty: no structures to train or evaluate on")
        for i in range(len(self)):
            m = self.mask[i]
            validate_structure(self.positions[i][m], self.numbers[i][m], self.cell[i], self.pbc[i],
                               where=f"{self.name}[{i}]")
        if require_forces and self.forces is None:
            raise ValueError(f"dataset {self.name!r} has no force labels but the force weight is non-zero; "
                             "set the force prefactors to 0 or provide forces")
        if not np.all(np.isfinite(self.energy)):
            bad = np.flatnonzero(~np.isfinite(self.energy))[:5]
            raise ValueError(f"dataset {self.name!r} has missing/non-finite energies at {bad.tolist()}")
        if self.forces is not None and not np.all(np.isfinite(self.forces[self.mask])):
            raise ValueError(f"dataset {self.name!r} has non-finite force labels")
        return self


def concatenate(datasets: Sequence[Dataset], name: str | None = None) -> Dataset:
    """Join datasets, padding to the largest atom count."""
    if not datasets:
        raise ValueError("nothing to concatenate")
    n_max = max(d.n_max for d in datasets)

    def pad(a, fill=0.0):
        if a.shape[1] == n_max:
            return a
        w = [(0, 0)] * a.ndim
        w[1] = (0, n_max - a.shape[1])
        return np.pad(a, w, constant_values=fill)

    def opt(get, padded):
        vals = [get(d) for d in datasets]
        if any(v is None for v in vals):
            return None
        return np.concatenate([pad(v) if padded else v for v in vals])

    return Dataset(np.concatenate([pad(d.positions) for d in datasets]),
                   np.concatenate([pad(d.numbers) for d in datasets]),
                   np.concatenate([d.energy for d in datasets]),
                   opt(lambda d: d.forces, True), np.concatenate([d.cell for d in datasets]),
                   np.concatenate([d.pbc for d in datasets]), opt(lambda d: d.virial, False),
                   np.concatenate([d.total_charge for d in datasets]), opt(lambda d: d.charges, True),
                   name=name or "+".join(d.name for d in datasets))


def resolve_total_charge(total_charge, atomic_numbers, has_charge_terms: bool, *,
                         how: str = "total_charge=Q") -> float:
    """The net charge (e) to evaluate a structure with.  An explicit value is always used
    (it must be finite).  ``None`` means neutral (0.0) when the atomic numbers sum to an
    even number, or when the model has no term that depends on the total charge
    (``has_charge_terms``: latent-charge terms equilibrate their charges to it); with
    charge terms and an odd sum of Z (an odd electron count if neutral: a charged
    system or a radical) ``None`` raises ``ValueError`` telling the caller to pass the
    charge (``how``: the way to pass it at this entry point).  ``atomic_numbers`` may
    contain padding zeros."""
    if total_charge is not None:
        try:
            q = float(total_charge)
        except (TypeError, ValueError):
            raise ValueError(f"total charge must be a number (e), got {total_charge!r}") from None
        if not np.isfinite(q):
            raise ValueError(f"total charge must be finite, got {q}")
        return q
    z_sum = int(np.sum(np.asarray(atomic_numbers, np.int64)))
    if not has_charge_terms or z_sum % 2 == 0:
        return 0.0
    raise ValueError(f"no total charge given, and the system has an odd number of electrons if neutral "
                     f"(sum of atomic numbers {z_sum}), so it cannot be assumed neutral: it is charged or a "
                     f"radical, and the model's latent charges are equilibrated to the total charge; pass "
                     f"{how} (e.g. 1 for a cation, 0 for a neutral radical)")


def validate_structure(positions, numbers, cell=None, pbc=None, *, where: str = "structure",
                       allowed: Optional[Sequence[int]] = None) -> None:
    """Raise ``ValueError`` naming the problem for NaN/inf coordinates, mismatched shapes,
    unknown species, or atoms closer than :data:`MIN_DISTANCE` Å (minimum image)."""
    positions = np.asarray(positions)
    numbers = np.asarray(numbers)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"{where}: positions must have shape (n_atoms, 3), got {positions.shape}")
    if numbers.shape != (positions.shape[0],):
        raise ValueError(f"{where}: species has shape {numbers.shape} but positions has "
                         f"{positions.shape[0]} atoms; shapes must match")
    if positions.shape[0] == 0:
        raise ValueError(f"{where}: structure has no atoms")
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))[:5]
        raise ValueError(f"{where}: non-finite (NaN or infinite) coordinates for atoms {bad.tolist()}")
    if allowed is not None:
        unknown = sorted(set(int(z) for z in numbers) - set(int(z) for z in allowed))
        if unknown:
            names = [chemical_symbols()[z] if 0 < z < len(chemical_symbols()) else str(z) for z in unknown]
            raise ValueError(f"{where}: species {names} (Z={unknown}) not known to the model, "
                             f"which was trained on Z={list(allowed)}")
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64)
        if cell.shape != (3, 3):
            raise ValueError(f"{where}: cell must be a 3x3 matrix of row vectors, got {cell.shape}")
        if not np.all(np.isfinite(cell)):
            raise ValueError(f"{where}: cell contains NaN or infinite values")
    if pbc is not None and np.any(pbc):
        if cell is None or abs(np.linalg.det(cell)) < 1e-8:
            raise ValueError(f"{where}: periodic structure needs a cell with non-zero volume")
    d_min, pair = min_distance(positions, cell if (pbc is not None and np.any(pbc)) else None, pbc)
    if d_min < MIN_DISTANCE:
        raise ValueError(f"{where}: atoms {pair[0]} and {pair[1]} are {d_min:.4f} Å apart, closer than "
                         f"{MIN_DISTANCE} Å (overlapping atoms)")


def min_distance(positions, cell=None, pbc=None):
    """Smallest interatomic distance (Å) and the pair, minimum image for periodic cells."""
    n = len(positions)
    if n < 2:
        return np.inf, (0, 0)
    if cell is None:
        if n <= 3000:
            d = positions[:, None, :] - positions[None, :, :]
            r2 = np.einsum("ijk,ijk->ij", d, d)
            np.fill_diagonal(r2, np.inf)
            k = int(np.argmin(r2))
            return float(np.sqrt(r2.flat[k])), divmod(k, n)
        box = np.eye(3)
        periodic = False
    else:
        box, periodic = cell, True
    from vesin import NeighborList

    pts = np.ascontiguousarray(positions, dtype=np.float64)
    nl = NeighborList(cutoff=MIN_DISTANCE * 1.5, full_list=False)
    i, j, d = nl.compute(points=pts, box=np.asarray(box, np.float64), periodic=periodic, quantities="ijd")
    if len(d) == 0:
        return np.inf, (0, 0)
    k = int(np.argmin(d))
    return float(d[k]), (int(i[k]), int(j[k]))
