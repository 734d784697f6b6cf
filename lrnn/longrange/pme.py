"""Periodic Coulomb sums through jax-pme (P3M or Ewald), with the same conventions as
:func:`lrnn.fmm.laplace_potential`: φ_i = Σ'_{j,n} q_j / |r_i − r_j + n·cell| (all periodic
images, no self term, neutralising background for charged cells), Gaussian units.

Periodic cells are not the FMM's job; this module wraps jax-pme (an optional dependency,
``pip install jax-pme``).  As with the FMM there is a plan/compute split: the neighbour
list and k-grid are built outside jit by :func:`periodic_plan` (jax-pme's ``prepare`` is
NumPy), the compute is a pure JAX function of (positions, charges, cell) that can be
jitted, vmapped over charges and differentiated (forces, ∂E/∂q = φ, stress via the cell).

Note jax-pme's own ``potentials`` are ½φ (its energy is Σ q·pot); we return φ.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PeriodicPlan", "periodic_plan", "periodic_potential_with_plan",
           "periodic_potential", "periodic_energy"]


@dataclasses.dataclass(frozen=True)
class PeriodicPlan:
    method: str
    i: np.ndarray
    j: np.ndarray
    cell_shifts: np.ndarray
    k_grid: np.ndarray
    smearing: float
    pbc: np.ndarray | None
    n: int
    calc: object = dataclasses.field(repr=False)


def _jaxpme():
    try:
        import jaxpme
    except ImportError as e:  # pragma: no cover
        raise ImportError("periodic sums need jax-pme: pip install jax-pme") from e
    return jaxpme


def periodic_plan(positions, cell, *, method: str = "p3m", cutoff: float | None = None,
                  smearing: float | None = None, mesh_spacing: float | None = None,
                  lr_wavelength: float | None = None) -> PeriodicPlan:
    """Neighbour list (real-space part) and k-grid for a periodic cell (NumPy, outside jit).

    Defaults scale with the cell: ``cutoff`` = 0.49 × the shortest cell height (or
    6·``smearing`` if that is given and smaller), ``smearing`` = cutoff/6,
    ``mesh_spacing`` = smearing/4 (P3M), ``lr_wavelength`` = smearing/2 (Ewald); on the
    NaCl crystal they reproduce the Madelung constant to ~1e-6 (tests/longrange).  Re-plan when atoms move by more than the neighbour-list skin (there is none:
    re-plan when they move appreciably compared with ``cutoff``).
    """
    from ase import Atoms

    x = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 particles, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("positions contain NaN/inf")
    if cell.shape != (3, 3) or abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(f"cell must be a non-singular (3, 3) matrix, got {cell}")
    vol = abs(np.linalg.det(cell))
    heights = vol / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    if cutoff is None:
        cutoff = 0.49 * heights.min() if smearing is None else min(6.0 * smearing,
                                                                  0.49 * heights.min())
    if smearing is None:
        smearing = cutoff / 6.0
    atoms = Atoms(positions=x, cell=cell, pbc=True)
    jp = _jaxpme()
    dummy_q = np.zeros(len(x))
    if method == "p3m":
        calc = jp.P3M()
        out = calc.prepare(atoms, dummy_q, cutoff, mesh_spacing or smearing / 4.0, smearing)
        pbc = None
    elif method == "ewald":
        calc = jp.Ewald()
        out = calc.prepare(atoms, dummy_q, cutoff, lr_wavelength or smearing / 2.0, smearing)
        pbc = np.asarray(out[-1])
        out = out[:-1]
    else:
        raise ValueError(f"method must be 'p3m' or 'ewald', got {method!r}")
    _, _, _, i, j, shifts, k_grid, sm = out
    return PeriodicPlan(method=method, i=np.asarray(i), j=np.asarray(j),
                        cell_shifts=np.asarray(shifts), k_grid=np.asarray(k_grid),
                        smearing=float(sm), pbc=pbc, n=len(x), calc=calc)


def periodic_potential_with_plan(plan: PeriodicPlan, positions, charges, cell):
    """φ_i for a fixed plan; pure JAX (jit/vmap/grad; close over ``plan``)."""
    positions = jnp.asarray(positions)
    charges = jnp.asarray(charges, positions.dtype)
    if positions.shape != (plan.n, 3) or charges.shape != (plan.n,):
        raise ValueError(f"plan is for {plan.n} particles; got positions {positions.shape} "
                         f"and charges {charges.shape}")
    cell = jnp.asarray(cell, positions.dtype)
    kw = {} if plan.pbc is None else {"pbc": plan.pbc}
    pot = plan.calc.potentials(charges, cell, positions, plan.i, plan.j, plan.cell_shifts,
                               plan.k_grid, plan.smearing, **kw)
    return 2.0 * pot


def periodic_potential(positions, charges, cell, *, method: str = "p3m", **plan_kwargs):
    """φ_i with periodic boundary conditions (plans from the concrete positions)."""
    x = positions
    if isinstance(x, jax.core.Tracer):
        x = x.to_concrete_value()
        if x is None:
            raise ValueError("periodic_potential needs concrete positions to plan; under "
                             "jit/vmap use periodic_plan(...) outside and "
                             "periodic_potential_with_plan inside")
    if np.shape(charges) != np.shape(positions)[:1]:
        raise ValueError(f"charges must have shape ({np.shape(positions)[0]},), "
                         f"got {np.shape(charges)}")
    pl = periodic_plan(np.asarray(x), np.asarray(cell), method=method, **plan_kwargs)
    return periodic_potential_with_plan(pl, positions, charges, cell)


def periodic_energy(positions, charges, cell, **kwargs):
    """E = ½ Σ q_i φ_i with periodic boundary conditions."""
    phi = periodic_potential(positions, charges, cell, **kwargs)
    return 0.5 * jnp.sum(jnp.asarray(charges, phi.dtype) * phi)
