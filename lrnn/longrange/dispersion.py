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
from lrnn.longrange.tiles import ROW_BLOCK, map_rows

POWERS = (6, 8, 10)


def dispersion_energy(positions, coeffs, mask, r0: float, r_on: float, r_off: float, powers=POWERS,
                      block: int = ROW_BLOCK):
    """Dispersion energy (eV).  ``coeffs`` (N, len(powers)) atomic C_m in eV·Å^m; the pair
    sum runs in row tiles of ``block`` (:mod:`lrnn.longrange.tiles`)."""
    n = positions.shape[0]

    def rows(idx, x, m, ci, pos, mask_all, c_all):
        d = x[:, None, :] - pos[None, :, :]
        pair = m[:, None] & mask_all[None, :] & (idx[:, None] != jnp.arange(n)[None, :])
        r = jnp.sqrt(jnp.where(pair, jnp.sum(d * d, axis=-1), 1.0))
        fc = smooth_switch(r, r_on, r_off)
        e = 0.0
        for k, p in enumerate(powers):
            c = jnp.sqrt(jnp.maximum(ci[:, k, None] * c_all[None, :, k], 1e-30))
            e = e + c / (r**p + r0**p)
        return jnp.sum(jnp.where(pair, fc * e, 0.0), axis=1)

    return -0.5 * jnp.sum(map_rows(rows, positions, mask, coeffs, block=block, consts=(positions, mask, coeffs)))
