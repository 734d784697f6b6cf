r"""DeepPot-SE "se_e2_a" smooth environment matrix (Zhang et al., NeurIPS 2018).

For a centre atom i and neighbour j with displacement :math:`\mathbf r_{ij}` (Å),

.. math::

    s(r) = \frac{\mathrm{sw}(r)}{r}, \qquad
    \mathrm{sw}(r) = \begin{cases} 1 & r < r_{cs} \\
        u^3(-6u^2 + 15u - 10) + 1, \; u = \frac{r - r_{cs}}{r_c - r_{cs}} & r_{cs} \le r < r_c \\
        0 & r \ge r_c \end{cases}

so that :math:`s` and its first two derivatives are continuous at :math:`r_{cs}` and
:math:`r_c` (C²).  The environment matrix row is
:math:`\tilde R_j = (s,\; s\,x/r,\; s\,y/r,\; s\,z/r)` (units 1/Å).  With embedding
:math:`G_j = \mathcal G_{t_i t_j}(s_j)` (one net per species pair, :math:`M_1` outputs),

.. math::

    T_i = \frac{1}{N_c}\sum_j G_j^\top \tilde R_j \in \mathbb R^{M_1\times 4}, \qquad
    D_i = T_i\, T_i^{<\top} \in \mathbb R^{M_1\times M_2},

where :math:`T^<` is the first :math:`M_2` rows.  :math:`D_i` is invariant to translation,
rotation (:math:`\tilde R` rotates as a vector in its last three columns and
:math:`T T^\top` contracts them) and permutation of neighbours of one species (a sum).
"""

from __future__ import annotations

import jax.numpy as jnp


def smooth_switch(r, r_cs: float, r_c: float):
    """C² switch sw(r): 1 below ``r_cs`` Å, 0 beyond ``r_c`` Å (see module docstring)."""
    u = jnp.clip((r - r_cs) / (r_c - r_cs), 0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def env_matrix(d, mask, r_cs: float, r_c: float):
    """Environment rows (s, s x/r, s y/r, s z/r) in 1/Å for displacements ``d`` (…, 3) in Å.

    Masked pairs (padding) get exactly zero rows and zero gradients (the displacement is
    replaced before the square root, so no NaN reaches the backward pass)."""
    far = jnp.asarray([r_c + 1.0, 0.0, 0.0], d.dtype)
    d = jnp.where(mask[..., None], d, far)
    r = jnp.sqrt(jnp.sum(d * d, axis=-1))
    s = smooth_switch(r, r_cs, r_c) / r
    s = jnp.where(mask, s, 0.0)
    return jnp.concatenate([s[..., None], (s / r)[..., None] * d], axis=-1)
