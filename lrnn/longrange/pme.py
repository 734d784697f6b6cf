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

from lrnn.units import COULOMB_K

__all__ = ["PeriodicPlan", "periodic_plan", "periodic_potential_with_plan",
           "periodic_potential", "periodic_energy", "mesh_shape", "coulomb_p3m"]


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


def mesh_shape(cell, spacing: float) -> tuple:
    """The P3M mesh (n_a, n_b, n_c) for ``cell`` (3, 3) Å and jax-pme's ``mesh_spacing``
    (Å): per axis the smallest power of two at least 2·L/spacing + 1, L the cell vector's
    length, so mesh points lie about spacing/3 apart (host, NumPy)."""
    cell = np.asarray(cell, np.float64)
    if cell.shape != (3, 3) or abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(f"P3M needs a non-singular (3, 3) cell, got {cell.tolist()}")
    if not spacing > 0:
        raise ValueError(f"P3M mesh spacing must be > 0 Å, got {spacing}")
    _jaxpme()  # the clear error when jax-pme is missing
    from jaxpme.kspace import get_kgrid_mesh_shape

    return tuple(int(x) for x in get_kgrid_mesh_shape(cell, float(spacing)))


def _mesh_frequencies(shape: tuple, nodes: int):
    r"""Per axis of the rfft half-mesh: the integer frequencies :math:`m_a` and the 1D
    factors :math:`\operatorname{sinc}(m_a/n_a)^{-2p}` of the P3M influence function
    :math:`1/U^2(\mathbf k) = \prod_a \operatorname{sinc}(m_a/n_a)^{-2p}` (B-splines of order
    p = ``nodes``).  Host constants of the mesh alone, O(n) in size: jax-pme computes the
    influence from k·cell instead, whose derivative in a triclinic cell is a cancellation of
    ill-conditioned sinc derivatives that changes under jit."""
    f = [np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2])]
    return [x * n for x, n in zip(f, shape)], [np.sinc(x) ** (-2 * nodes) for x in f]


def coulomb_p3m(positions, charges, mask, cell, sigma: float, shape: tuple, k: float = COULOMB_K,
                interpolation_nodes: int = 4):
    r"""Periodic Coulomb energy (eV) of Gaussian charges of width ``sigma`` (Å) by P3M, the
    energy of :func:`lrnn.longrange.coulomb.coulomb_reciprocal` in O(N + M log M) for a
    mesh of M points:

    .. math::

        E = k\Big[\frac{2\pi}{V}\sum_{\mathbf k\ne 0}\frac{e^{-k^2\sigma^2}}{k^2}|S(\mathbf k)|^2
            - \sum_i \frac{q_i^2}{2\sigma\sqrt\pi} - \frac{2\pi\sigma^2 Q^2}{V}\Big].

    The charges are spread on the mesh ``shape`` (:func:`mesh_shape`, static) by cardinal
    B-splines of order ``interpolation_nodes`` (jax-pme's ``bspline``), the structure factor
    is an FFT, and the Gaussian-charge kernel :math:`4\pi e^{-k^2\sigma^2}/k^2` is multiplied
    by the P3M influence function (:func:`_mesh_frequencies`).  No real-space sum is needed:
    :math:`e^{-k^2\sigma^2}` is the transform of the pair kernel
    :math:`\operatorname{erf}(r/2\sigma)/r` itself (jax-pme's range split with smearing
    :math:`\sqrt2\sigma`, whose long-range half this is).  The last term is the finite
    :math:`\mathbf k \to 0` limit for a charged cell in a neutralising background
    (:math:`Q = \sum_i q_i`; Ewald's :math:`\pi Q^2/2V\alpha^2` with :math:`\alpha = 1/2\sigma`);
    ``coulomb_reciprocal`` omits it, so the two differ by that constant when Q ≠ 0.
    Positions (N, 3) Å, charges (N,) e, ``mask`` (N,) the real atoms, ``cell`` (3, 3) rows
    in Å.  Differentiable in positions, charges and cell (forces, potentials, virial)."""
    _jaxpme()
    from jaxpme.mesh import bspline

    compute_weights, points_to_mesh, mesh_to_points = bspline(interpolation_nodes)
    dtype = positions.dtype
    q = jnp.where(mask, charges, 0.0).astype(dtype)
    cell = jnp.asarray(cell, dtype)
    inv = jnp.linalg.inv(cell)
    mesh = compute_weights(inv, positions, jnp.ones(shape, dtype))
    rho_hat = jnp.fft.rfftn(points_to_mesh(q, mesh), s=shape)
    m, infl = _mesh_frequencies(shape, interpolation_nodes)
    m = [jnp.asarray(x, dtype) for x in m]
    recip = 2.0 * jnp.pi * inv.T  # rows: reciprocal vectors
    g = recip @ recip.T  # k² = Σ_ab m_a m_b g_ab, built from 1D arrays (no (M, 3) k-vectors)
    m0, m1, m2 = m[0][:, None, None], m[1][None, :, None], m[2][None, None, :]
    k2 = (g[0, 0] * m0**2 + g[1, 1] * m1**2 + g[2, 2] * m2**2
          + 2.0 * (g[0, 1] * m0 * m1 + g[0, 2] * m0 * m2 + g[1, 2] * m1 * m2))
    k0 = (m0 == 0) & (m1 == 0) & (m2 == 0)
    k2 = jnp.where(k0, 1.0, k2)
    influence = (jnp.asarray(infl[0], dtype)[:, None, None] * jnp.asarray(infl[1], dtype)[None, :, None]
                 * jnp.asarray(infl[2], dtype)[None, None, :])
    kernel = jnp.where(k0, 0.0, 4.0 * jnp.pi * jnp.exp(-(sigma**2) * k2) / k2) * influence
    phi_mesh = jnp.fft.irfftn(rho_hat * kernel, s=shape, norm="forward")
    vol = jnp.abs(jnp.linalg.det(cell))
    phi = mesh_to_points(phi_mesh, mesh) / vol  # the k-space potential of the Gaussian charges
    qtot = jnp.sum(q)
    return k * (0.5 * jnp.sum(q * phi) - jnp.sum(q * q) / (2.0 * sigma * jnp.sqrt(jnp.pi))
                - 2.0 * jnp.pi * sigma**2 * qtot**2 / vol)
