r"""Coulomb energies of Gaussian-smeared charges (eV, Å, e).

Each charge :math:`q_i` is a normalised Gaussian of width :math:`\sigma` (Å).  Two such
charges interact through

.. math::

    v(r) = k\,\frac{\operatorname{erf}\!\big(r / (2\sigma)\big)}{r},
    \qquad k = 14.399645\ \text{eV·Å}/e^2,

which is finite at :math:`r = 0` (limit :math:`k/(\sigma\sqrt\pi)`) and equals the point
Coulomb law to within :math:`\operatorname{erfc}(r/2\sigma)` beyond a few σ.  The energy is

.. math::

    E = \frac12 \sum_{i \ne j} q_i q_j\, v(r_{ij})
      = E_{\text{point}} - \frac{k}{2}\sum_{i\ne j} q_i q_j
        \frac{\operatorname{erfc}\!\big(r_{ij}/2\sigma\big)}{r_{ij}},

the second form splitting it into a point-charge sum (direct, FMM or Ewald/P3M) and a
short-ranged correction over neighbour pairs.  Self-energies (a constant per charge
squared) are not included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrnn.fmm.core import potential_with_plan
from lrnn.longrange.tiles import ROW_BLOCK, map_rows
from lrnn.units import COULOMB_K


def _safe_r(d, mask):
    d = jnp.where(mask[..., None], d, jnp.ones_like(d))
    return jnp.sqrt(jnp.sum(d * d, axis=-1))


def smeared_pair(r, sigma):
    """erf(r/2σ)/r (1/Å), smooth through r = 0."""
    x = r / (2.0 * sigma)
    small = x < 1e-3
    xs = jnp.where(small, 1.0, x)
    val = jax.scipy.special.erf(xs) / jnp.where(small, 1.0, r)
    # series erf(x)/r = (2/sqrt(pi)) (1 - x^2/3) / (2 sigma) near r = 0
    series = (1.0 - x * x / 3.0) / (sigma * jnp.sqrt(jnp.pi))
    return jnp.where(small, series, val)


def coulomb_direct(positions, charges, mask=None, sigma: float = 0.0, k: float = COULOMB_K,
                   block: int = ROW_BLOCK):
    """Coulomb energy (eV) by the exact O(N²) sum, in row tiles of ``block`` atoms
    (:mod:`lrnn.longrange.tiles`).

    ``positions`` (N, 3) Å, ``charges`` (N,) e, ``mask`` (N,) marks real atoms, ``sigma``
    the Gaussian width (Å; 0 for point charges)."""
    n = positions.shape[0]
    mask = jnp.ones(n, bool) if mask is None else mask
    q = jnp.where(mask, charges, 0.0)

    def rows(idx, x, qi, m, pos, q_all, mask_all):
        d = pos[None, :, :] - x[:, None, :]
        pm = (idx[:, None] != jnp.arange(n)[None, :]) & mask_all[None, :] & m[:, None]
        r = _safe_r(d, pm)
        v = smeared_pair(r, sigma) if sigma > 0 else 1.0 / r
        return jnp.sum(jnp.where(pm, qi[:, None] * q_all[None, :] * v, 0.0), axis=1)

    return 0.5 * k * jnp.sum(map_rows(rows, positions, q, mask, block=block, consts=(positions, q, mask)))


def equilibrate(raw, mask, total_charge):
    r"""Shift predicted charges uniformly so that :math:`\sum_i q_i = Q` (e):
    :math:`q_i = \tilde q_i + (Q - \sum_j \tilde q_j)/N` over the real atoms."""
    n = jnp.maximum(jnp.sum(mask), 1)
    raw = jnp.where(mask, raw, 0.0)
    return jnp.where(mask, raw + (total_charge - jnp.sum(raw)) / n, 0.0)


def k_index_vectors(k_index_max) -> np.ndarray:
    r"""The integer vectors :math:`\mathbf n \ne 0` (float, (K, 3)) of a reciprocal-space sum
    with :math:`|n_a| \le` ``k_index_max`` (an int, the same along every cell vector, or three
    ints, one per cell vector: a cell much longer along one vector needs more indices along
    it for the same :math:`|\mathbf k|`, ``n_a ≈ k_max L_a / 2π``)."""
    m = np.broadcast_to(np.asarray(k_index_max, int), (3,))
    if np.any(m < 0):
        raise ValueError(f"k_index_max must be >= 0, got {k_index_max}")
    n = np.stack(np.meshgrid(*[np.arange(-a, a + 1) for a in m], indexing="ij"), -1).reshape(-1, 3)
    return n[np.any(n != 0, axis=-1)].astype(float)


def coulomb_reciprocal(positions, charges, mask, cell, sigma: float, k_index_max, k: float = COULOMB_K):
    r"""Periodic Coulomb energy (eV) of Gaussian charges of width ``sigma`` (Å), all in
    reciprocal space (no real-space part is needed for smeared charges):

    .. math::

        E = k\Big[\frac{2\pi}{V}\sum_{\mathbf k\ne 0} \frac{e^{-k^2\sigma^2}}{k^2}\,|S(\mathbf k)|^2
            - \sum_i \frac{q_i^2}{2\sigma\sqrt\pi}\Big],

    with :math:`\mathbf k = 2\pi\mathbf n h^{-\top}`, :math:`|n_a| \le` ``k_index_max`` (an
    int or one per cell vector, :func:`k_index_vectors`; choose it so that
    :math:`e^{-k_{max}^2\sigma^2}` is negligible).  Omitting :math:`\mathbf k = 0` adds a
    neutralising background for charged cells."""
    q = jnp.where(mask, charges, 0.0)
    nvec = jnp.asarray(k_index_vectors(k_index_max), positions.dtype)
    kvec = nvec @ (2.0 * jnp.pi * jnp.linalg.inv(cell).T)
    k2 = jnp.sum(kvec * kvec, axis=-1)
    phase = kvec @ positions.T
    s2 = (jnp.cos(phase) @ q) ** 2 + (jnp.sin(phase) @ q) ** 2
    vol = jnp.abs(jnp.linalg.det(cell))
    recip = 2.0 * jnp.pi / vol * jnp.sum(jnp.exp(-k2 * sigma**2) / k2 * s2)
    return k * (recip - jnp.sum(q * q) / (2.0 * sigma * jnp.sqrt(jnp.pi)))


#: Leaves of an FMM plan for :func:`coulomb_fmm` must be at least this many σ wide, so
#: that every pair the FMM treats as far (:math:`r \ge h_L`) has
#: :math:`\operatorname{erfc}(r/2\sigma) \le \operatorname{erfc}(4) \approx 1.5\times10^{-8}`.
FMM_LEAF_SIGMAS = 8.0


def coulomb_fmm(plan, positions, charges, mask=None, sigma: float = 0.0, k: float = COULOMB_K):
    r"""The energy of :func:`coulomb_direct` (eV) by the fast multipole method.

    :math:`E = \frac k2 \sum_i q_i \phi_i` with
    :math:`\phi_i = \sum_{j\ne i} q_j\,\mathrm{erf}(r_{ij}/2\sigma)/r_{ij}`: the FMM
    (:mod:`lrnn.fmm.core`) evaluates the point-charge far field by multipoles and the near
    field with the smeared kernel, exact up to the FMM error when the plan's leaves are at
    least :data:`FMM_LEAF_SIGMAS` σ wide.  ``plan`` is an :class:`lrnn.fmm.FMMPlan` for the
    first ``plan.n`` atoms (the real ones; padding rows must come after them and carry zero
    charge).  O(N); differentiable; NaN (never a wrong number) if the plan is stale."""
    n = plan.n
    q = charges if mask is None else jnp.where(mask, charges, 0.0)
    kernel = (lambda r2: smeared_pair(jnp.sqrt(r2), sigma)) if sigma > 0 else None
    phi = potential_with_plan(plan, positions[:n], q[:n], near_kernel=kernel)
    return 0.5 * k * jnp.sum(q[:n] * phi)
