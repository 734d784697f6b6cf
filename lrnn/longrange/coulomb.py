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
                   block: int = 1024):
    """Coulomb energy (eV) by the exact O(N²) sum, in row blocks of ``block`` atoms.

    ``positions`` (N, 3) Å, ``charges`` (N,) e, ``mask`` (N,) marks real atoms, ``sigma``
    the Gaussian width (Å; 0 for point charges)."""
    n = positions.shape[0]
    mask = jnp.ones(n, bool) if mask is None else mask
    q = jnp.where(mask, charges, 0.0)

    def rows(start_pos, start_q, idx):
        d = positions[None, :, :] - start_pos[:, None, :]
        pm = (idx[:, None] != jnp.arange(n)[None, :]) & mask[None, :]
        r = _safe_r(d, pm)
        v = smeared_pair(r, sigma) if sigma > 0 else 1.0 / r
        return jnp.sum(jnp.where(pm, start_q[:, None] * q[None, :] * v, 0.0))

    if n <= block:
        return 0.5 * k * rows(positions, q, jnp.arange(n))
    nb = -(-n // block)
    pad = nb * block - n
    pos_p = jnp.concatenate([positions, jnp.zeros((pad, 3), positions.dtype)]).reshape(nb, block, 3)
    q_p = jnp.concatenate([q, jnp.zeros(pad, q.dtype)]).reshape(nb, block)
    idx = jnp.arange(nb * block).reshape(nb, block)
    parts = jax.lax.map(lambda a: jax.checkpoint(rows)(*a), (pos_p, q_p, idx))
    return 0.5 * k * jnp.sum(parts)


def equilibrate(raw, mask, total_charge):
    r"""Shift predicted charges uniformly so that :math:`\sum_i q_i = Q` (e):
    :math:`q_i = \tilde q_i + (Q - \sum_j \tilde q_j)/N` over the real atoms."""
    n = jnp.maximum(jnp.sum(mask), 1)
    raw = jnp.where(mask, raw, 0.0)
    return jnp.where(mask, raw + (total_charge - jnp.sum(raw)) / n, 0.0)
