r"""Sum-of-Gaussians (SOG) long-range kernel (SOG-Net, Ji, Liang et al.).

.. math::

    E = \frac12 \sum_{i \ne j} q_i q_j \sum_{l=1}^{L} w_l\, e^{-r_{ij}^2 / s_l^2}

with learnable weights :math:`w_l` (eV/e²) and widths :math:`s_l` (Å).  Open boundaries:
an exact pair sum.  Periodic cells: the reciprocal-space form, using the Fourier transform
:math:`\hat G(k) = \sum_l w_l \pi^{3/2} s_l^3 e^{-k^2 s_l^2/4}`,

.. math::

    E = \frac{1}{2V}\sum_{\mathbf k} \hat G(k)\, |S(\mathbf k)|^2 - \frac12 \sum_i q_i^2 \sum_l w_l,
    \qquad S(\mathbf k) = \sum_j q_j e^{i\mathbf k\cdot\mathbf r_j},

summing :math:`\mathbf k = 2\pi\, \mathbf n\, h^{-\top}` over integer :math:`|n_a| \le K`
(every periodic image included; the second term removes the self-interaction).  The
:math:`\mathbf k = 0` term is kept: for a neutral system :math:`S(0) = 0`.
"""

from __future__ import annotations

import jax.numpy as jnp

from lrnn.longrange.tiles import ROW_BLOCK, map_rows


def sog_kernel(r2, weights, widths):
    """Σ_l w_l exp(-r²/s_l²) for squared distances ``r2`` (Å²)."""
    return jnp.sum(weights * jnp.exp(-r2[..., None] / widths**2), axis=-1)


def sog_open(positions, charges, mask, weights, widths, block: int = ROW_BLOCK):
    """Open-boundary SOG energy (eV) by the exact pair sum (row tiles of ``block``)."""
    q = jnp.where(mask, charges, 0.0)
    n = positions.shape[0]

    def rows(idx, x, qi, pos, q_all, w, s):
        d = x[:, None, :] - pos[None, :, :]
        v = sog_kernel(jnp.sum(d * d, axis=-1), w, s)
        v = jnp.where(idx[:, None] != jnp.arange(n)[None, :], v, 0.0)
        return qi * (v @ q_all)

    return 0.5 * jnp.sum(map_rows(rows, positions, q, block=block, consts=(positions, q, weights, widths)))


def sog_periodic(positions, charges, mask, cell, weights, widths, k_index_max: int):
    """Periodic SOG energy (eV) in reciprocal space; ``cell`` rows are the cell vectors (Å)."""
    q = jnp.where(mask, charges, 0.0)
    rng = jnp.arange(-k_index_max, k_index_max + 1)
    nvec = jnp.stack(jnp.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3).astype(positions.dtype)
    recip = 2.0 * jnp.pi * jnp.linalg.inv(cell).T  # rows b_a with a_i·b_j = 2π δ_ij
    k = nvec @ recip
    k2 = jnp.sum(k * k, axis=-1)
    ghat = jnp.sum(weights * jnp.pi**1.5 * widths**3 * jnp.exp(-k2[:, None] * widths**2 / 4.0), axis=-1)
    phase = k @ positions.T  # (K, N)
    s_re, s_im = jnp.cos(phase) @ q, jnp.sin(phase) @ q
    vol = jnp.abs(jnp.linalg.det(cell))
    return 0.5 / vol * jnp.sum(ghat * (s_re**2 + s_im**2)) - 0.5 * jnp.sum(q * q) * jnp.sum(weights)
