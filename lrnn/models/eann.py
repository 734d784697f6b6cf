r"""Embedded-atom neural network (EANN) local model (model type ``eann``).

Zhang, Hu & Jiang, J. Phys. Chem. Lett. 10, 4962 (2019): the environment of atom i is an
"embedded density" built from Gaussian-type orbitals of its neighbours,

.. math::

    \varphi^{\ell_x\ell_y\ell_z}_k(\mathbf r) = x^{\ell_x} y^{\ell_y} z^{\ell_z}\,
        e^{-(r - r_k)^2/\Delta^2} f_c(r), \qquad
    f_c(r) = \big(\tfrac12\cos(\pi r/r_c) + \tfrac12\big)^2 \ (r < r_c),\ 0 \text{ beyond},

with Gaussian centres :math:`r_k` on a uniform grid over :math:`[0, r_c]`
(``n_radial`` of them, spacing and width :math:`\Delta = r_c/(n_{radial}-1)`) and the
coordinates in units of :math:`r_c`.  The orbitals of the neighbours are combined with
element-dependent coefficients into ``channels`` orbitals per centre, and the density of
channel c and angular order L is the rotation-invariant square norm

.. math::

    A_{i,c,\ell_x\ell_y\ell_z} &= \frac1{\sqrt{\bar N}}\sum_{j\ne i}\sum_k
        W_{z_j,kc}\,\varphi^{\ell_x\ell_y\ell_z}_k(\mathbf r_{ij}), \\
    \rho_{i,cL} &= \sum_{\ell_x+\ell_y+\ell_z=L}\frac{L!}{\ell_x!\,\ell_y!\,\ell_z!}
        A_{i,c,\ell_x\ell_y\ell_z}^2
        = \frac1{\bar N}\sum_{j,j'} a_{jc}\, a_{j'c}\, (\mathbf r_{ij}\cdot\mathbf r_{ij'})^L

(:math:`a_{jc}` the radial part), for :math:`L = 0..` ``l_max``.  The descriptor
:math:`D_i = (\rho_{i,cL})` (plus the far-field features if configured) feeds a
per-species MLP :math:`\mathcal F_{z_i}` (``fit``); every long-range term of
``long_range`` receives the same :math:`D_i`, exactly as with DeepPot-SE (the composition
of :class:`lrnn.models.base.LocalModel`).  :math:`\bar N` is the ``n_norm`` neighbour count of the
training statistics.  f_c and its first derivative vanish at r_c, so energy and forces are
continuous as a neighbour crosses the cutoff; the energy is invariant under rotations,
reflections, translations and permutations.  Forces and virial come from ``jax.grad``.
REANN (Zhang, Xia & Jiang, J. Chem. Phys. 154, 094703 (2021)), ``recursions: T`` > 0: the
neighbours' orbital coefficients become functions of their own densities, a message
passing of T rounds that widens the receptive field to (T + 1) r_c,

.. math::

    W^{(t)}_{j,kc} = W_{z_j,kc} + \mathcal G^{(t)}_{z_j}\big(\rho^{(t-1)}_j\big)_{kc},
    \qquad \rho^{(0)} \text{ as above},

with :math:`\rho^{(t)}` the density built with :math:`W^{(t)}_j` in place of
:math:`W_{z_j}`, and :math:`D_i = \rho^{(T)}_i`.  :math:`\mathcal G^{(t)}` is a per-species MLP
(``recursion_fit`` hidden widths) whose last layer starts at zero, so that an untrained REANN
is the EANN of its first round.  Smoothness and invariance carry over: every round is a
smooth, invariant function of smooth, invariant inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrnn.models.base import LocalConfig, LocalModel
from lrnn.nn import StackedMLP


@dataclasses.dataclass(frozen=True)
class EANNConfig(LocalConfig):
    """Hyper-parameters (lengths in Å): those of :class:`lrnn.models.base.LocalConfig`
    (``rcut_smth`` only enters the neighbour statistics) plus the orbitals' and fitting nets'."""

    rcut: float = 5.0
    n_radial: int = 8  # Gaussians per orbital
    l_max: int = 2  # angular orders L = 0..l_max
    channels: int = 16  # orbitals per centre (linear combinations of the neighbours' Gaussians)
    fit: tuple = (64, 64)
    recursions: int = 0  # REANN message-passing rounds (0: EANN)
    recursion_fit: tuple = (32,)  # hidden widths of the per-round coefficient nets

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "fit", tuple(int(x) for x in self.fit))
        object.__setattr__(self, "recursion_fit", tuple(int(x) for x in self.recursion_fit))
        for k, lo in {"n_radial": 2, "channels": 1, "l_max": 0, "recursions": 0}.items():
            if int(getattr(self, k)) < lo:
                raise ValueError(f"{k} must be >= {lo}, got {getattr(self, k)}")
        if self.l_max > 4:
            raise ValueError(f"l_max <= 4, got {self.l_max}")


def monomials(l_max: int):
    """Exponents (M, 3) of all x^a y^b z^c with a+b+c <= l_max, their order L (M,) and the
    multinomial weights L!/(a! b! c!) (M,)."""
    exps = [e for L in range(l_max + 1) for e in itertools.product(range(L + 1), repeat=3) if sum(e) == L]
    exps = np.asarray(exps, np.int32)
    order = exps.sum(1)
    weight = np.array([math.factorial(L) / np.prod([math.factorial(int(v)) for v in e])
                       for e, L in zip(exps, order)])
    return exps, order, weight


def cutoff_fn(r, rcut):
    """(½ cos(π r/r_c) + ½)² for r < r_c, 0 beyond."""
    c = 0.5 * jnp.cos(jnp.pi * jnp.minimum(r, rcut) / rcut) + 0.5
    return jnp.where(r < rcut, c * c, 0.0)


class EANN(LocalModel):
    """EANN local model (module docstring); the energy, charges and long-range composition
    are :class:`lrnn.models.base.LocalModel`'s."""

    def __init__(self, config: EANNConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        t = config.n_types
        self.coeff = nnx.Param(jax.random.normal(rngs.params(), (t, config.n_radial, config.channels), dtype)
                               / math.sqrt(config.n_radial))
        rho_width = config.channels * (config.l_max + 1)
        for rnd in range(config.recursions):  # REANN: coefficient corrections from the last round's density
            net = StackedMLP(t, (rho_width,) + config.recursion_fit + (config.n_radial * config.channels,),
                             act=config.activation, linear_output=True, dtype=dtype, rngs=rngs)
            last = f"w{net.n_layers - 1}"
            getattr(net, last).set_value(jnp.zeros_like(getattr(net, last)[...]))
            setattr(self, f"recursion{rnd}", net)
        d = self.descriptor_width
        self.fitting = StackedMLP(t, (d,) + tuple(config.fit) + (1,), act=config.activation, linear_output=True,
                                  bias_std=1.0, dtype=dtype, rngs=rngs)
        self.add_terms(d, rngs, dtype)

    @property
    def descriptor_width(self) -> int:
        cfg = self.config
        return cfg.channels * (cfg.l_max + 1) + (cfg.n_types if cfg.far_field else 0)

    def descriptors(self, inputs, stats):
        """Per centre species ``a``: D (C_a, descriptor_width) and the centre mask (C_a,)."""
        cfg = self.config
        t = cfg.n_types
        pos = inputs.positions
        dt = pos.dtype
        n = pos.shape[0]
        pos_ext = jnp.concatenate([pos, jnp.zeros((1, 3), dt)], axis=0)
        cell = inputs.cell.astype(dt)
        lay = inputs.layout
        exps, order, weight = monomials(cfg.l_max)
        centres_k = jnp.linspace(0.0, cfg.rcut, cfg.n_radial, dtype=dt)
        width = cfg.rcut / (cfg.n_radial - 1)
        onehot_l = jnp.asarray((order[:, None] == np.arange(cfg.l_max + 1)[None]) * weight[:, None], dt)  # (M, L)
        inv_norm = 1.0 / jnp.sqrt(jnp.asarray(stats["n_norm"], dt))
        far = None
        if cfg.far_field:
            ff = self.far_field_features(inputs)
            far = jnp.concatenate([ff, jnp.zeros((1, ff.shape[1]), ff.dtype)], axis=0)
        geometry = []  # per centre species: (centres, neighbours, radial Gaussians g, monomials)
        for a in range(t):
            cidx, nb = lay.centres[a], lay.neighbors[a]  # (C_a,), (C_a, T, S)
            if cidx.shape[0] == 0:
                geometry.append(None)
                continue
            d = pos_ext[nb] - pos_ext[cidx][:, None, None, :] + lay.shifts[a].astype(dt) @ cell
            mask = (nb < n) & (cidx < n)[:, None, None]
            d = jnp.where(mask[..., None], d, 2.0 * cfg.rcut)  # padding: beyond the cutoff, safe norm
            r = jnp.sqrt(jnp.sum(d * d, axis=-1))
            g = jnp.exp(-(((r[..., None] - centres_k) / width) ** 2)) * (cutoff_fn(r, cfg.rcut) * mask)[..., None]
            u = d / cfg.rcut
            pw = [jnp.ones_like(u)]
            for _ in range(cfg.l_max):  # powers by products: no pow (NaN gradients at 0, negative bases)
                pw.append(pw[-1] * u)
            pw = jnp.stack(pw, axis=-1)  # (C_a, T, S, 3, l_max + 1)
            mono = pw[..., 0, exps[:, 0]] * pw[..., 1, exps[:, 1]] * pw[..., 2, exps[:, 2]]  # (C_a, T, S, M)
            geometry.append((cidx, nb, g, mono))

        def density(radial, mono, n_centres):
            amp = jnp.einsum("cbsh,cbsm->chm", radial, mono) * inv_norm
            return ((amp * amp) @ onehot_l).reshape(n_centres, -1)  # (C_a, channels * (l_max + 1))

        coeff = self.coeff[...].astype(dt)  # (T, K, channels)
        rho = [None if geo is None else density(jnp.einsum("cbsk,bkh->cbsh", geo[2], coeff), geo[3], geo[0].shape[0])
               for geo in geometry]
        for rnd in range(cfg.recursions):  # REANN: each atom's coefficients from its last density
            net = getattr(self, f"recursion{rnd}")
            w_atom = jnp.zeros((n + 1,) + coeff.shape[1:], dt)  # row n: padding neighbours (g = 0 there)
            for a, geo in enumerate(geometry):
                if geo is not None:
                    w_a = coeff[a] + net(a, rho[a]).reshape((-1,) + coeff.shape[1:])
                    w_atom = w_atom.at[geo[0]].set(w_a)
            rho = [None if geo is None else density(jnp.einsum("cbsk,cbskh->cbsh", geo[2], w_atom[geo[1]]), geo[3],
                                                    geo[0].shape[0]) for geo in geometry]
        out = []
        for geo, dflat in zip(geometry, rho):
            if geo is None:
                out.append(None)
                continue
            cidx = geo[0]
            if far is not None:
                dflat = jnp.concatenate([dflat, far[cidx]], axis=-1)
            out.append((dflat, cidx < n))
        return out
