r"""Smooth far-field descriptor: per-channel potentials with the local part removed.

.. math::

    \phi_{i,c}^{\text{far}} = \sum_{j \ne i} q_{j,c}\, \frac{1 - f_c(r_{ij})}{r_{ij}},

with :math:`f_c` the C² switch of :mod:`lrnn.descriptors.se_e2_a` (1 below ``r_on``, 0
beyond ``r_off``), so the feature is smooth everywhere, ignores everything inside the
local region and tends to the Coulomb potential of the channel far away.  Channels
``species``: :math:`q_{j,c} = \delta_{t_j c}` (one potential per species).  This replaces
the thesis's fixed-grid centre-of-mass descriptor, which jumps when an atom changes grid
cell; the hierarchical (FMM) evaluation uses the pluggable near-field kernel of
:mod:`lrnn.fmm.core` with exactly this kernel.  Units: 1/Å, scaled by ``r_off`` to O(1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrnn.descriptors.se_e2_a import smooth_switch
from lrnn.fmm.core import potential_with_plan
from lrnn.longrange.tiles import ROW_BLOCK, map_rows


def far_field_kernel(r, r_on: float, r_off: float):
    """(1 - f_c(r)) / r in 1/Å (zero inside r_on, 1/r beyond r_off)."""
    return (1.0 - smooth_switch(r, r_on, r_off)) / r


def far_field_potentials(positions, types, n_types: int, r_on: float, r_off: float, block: int = ROW_BLOCK):
    """(N, n_types) far-field potentials of the species channels (exact O(N²) sum in row
    tiles, :mod:`lrnn.longrange.tiles`)."""
    n = positions.shape[0]
    mask = types >= 0
    onehot = (types[:, None] == jnp.arange(n_types)[None, :]).astype(positions.dtype)

    def rows(idx, x, m, pos, mask_all, oh):
        d = x[:, None, :] - pos[None, :, :]
        pair = m[:, None] & mask_all[None, :] & (idx[:, None] != jnp.arange(n)[None, :])
        r = jnp.sqrt(jnp.where(pair, jnp.sum(d * d, axis=-1), 1.0))
        return jnp.where(pair, far_field_kernel(r, r_on, r_off), 0.0) @ oh

    return map_rows(rows, positions, mask, block=block, consts=(positions, mask, onehot))


def far_field_potentials_fmm(plan, positions, types, n_types: int, r_on: float, r_off: float):
    """(N, n_types) far-field potentials by the FMM: the same quantity as
    :func:`far_field_potentials` in O(N).  The plan (for the first ``plan.n`` rows, the real
    atoms) must have leaves at least ``r_off`` wide, so that the near field (P2P, with the
    kernel (1 - f_c(r))/r) holds every pair where the kernel differs from 1/r and the
    multipole far field is exact up to the FMM error.  One FMM pass per species channel,
    sharing the plan."""
    n = plan.n
    onehot = (types[:n, None] == jnp.arange(n_types)[None, :]).astype(positions.dtype)

    def kernel(r2):
        return far_field_kernel(jnp.sqrt(r2), r_on, r_off)

    phi = jax.vmap(lambda q: potential_with_plan(plan, positions[:n], q, near_kernel=kernel),
                   in_axes=1, out_axes=1)(onehot)
    return jnp.zeros((positions.shape[0], n_types), positions.dtype).at[:n].set(phi)
