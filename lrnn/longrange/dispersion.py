r"""Neural dispersion: the C_m expansion for many atoms.

.. math::

    E_{\text{disp}} = -\sum_{i<j} f_c(r_{ij}) \sum_{m \in \{6, 8, 10\}}
        \frac{C_{m,ij}\, f_m(r_{ij})}{r_{ij}^m},
    \qquad C_{m,ij} = \sqrt{C_{m,i} C_{m,j}},

with environment-dependent, positive atomic coefficients :math:`C_{m,i}` (eV·Å^m) from a
network (softplus output), Becke–Johnson-style damping
:math:`C_m f_m / r^m = C_m / (r^m + R_0^m)` (finite at r = 0), and a smooth C² cutoff
:math:`f_c` that switches from 1 to 0 between ``r_on`` and ``r_off`` (Å).
"""

from __future__ import annotations

import jax.numpy as jnp

from lrnn.descriptors.se_e2_a import smooth_switch

POWERS = (6, 8, 10)


def dispersion_energy(positions, coeffs, mask, r0: float, r_on: float, r_off: float, powers=POWERS):
    """Dispersion energy (eV).  ``coeffs`` (N, len(powers)) atomic C_m in eV·Å^m."""
    n = positions.shape[0]
    d = positions[:, None, :] - positions[None, :, :]
    pair = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
    r2 = jnp.where(pair, jnp.sum(d * d, axis=-1), 1.0)
    r = jnp.sqrt(r2)
    fc = smooth_switch(r, r_on, r_off)
    e = 0.0
    for k, m in enumerate(powers):
        c = jnp.sqrt(jnp.maximum(coeffs[:, k, None] * coeffs[None, :, k], 1e-30))
        e = e + c / (r ** m + r0 ** m)
    return -0.5 * jnp.sum(jnp.where(pair, fc * e, 0.0))
