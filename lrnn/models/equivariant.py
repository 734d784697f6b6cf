r"""MACE-like E(3)-equivariant message-passing local model (model type ``mace``).

Why MACE-like rather than NequIP-like: NequIP reaches many-body accuracy by stacking
4-6 two-body (edge-wise) tensor-product layers; MACE builds body order ν_max + 1 in
*each* node update with a symmetric contraction of the atomic basis A, so two layers
suffice (receptive field 2 r_c) and the edge work, which dominates on CPUs, is done
twice instead of five times.  The per-node contraction is cheap (it has no edge axis).
For the same reason the radial functions are by default linear in the Bessel basis per
path and channel (the PaiNN filter) rather than MACE's 3-layer MLP: on rMD17 aspirin
the MLP made the radial part most of the cost (``radial_mlp`` restores it).

Edges :math:`r_{ij} = R_j - R_i + n\cdot h` come from the species-blocked neighbour
:class:`~lrnn.neighbors.Layout`; node arrays live in *row space* (the concatenated
centre blocks, the species static per row), so the sum over neighbours is a dense sum
over the slot axis (no scatter) and the per-species blocks of the descriptor are
slices.  Padding slots and rows are masked to exactly zero.

Radial basis with a polynomial envelope (p = ``envelope_p``), :math:`d = r/r_c`:

.. math::

    B_n(r) = \frac{\sin(n\pi d)}{d}\,u(d),\qquad
    u(d) = 1 - \tfrac{(p+1)(p+2)}2 d^p + p(p+2) d^{p+1} - \tfrac{p(p+1)}2 d^{p+2}

(the Bessel basis of DimeNet/MACE scaled to O(1) values, which keeps the many-body
part of the energy at init comparable to the two-body part; u and its first two
derivatives vanish at d = 1, zero beyond, so energy and forces are continuous as a
neighbour crosses r_c).  Layer t = 1..T, channels k:

.. math::

    A^{(t)}_{i,k\ell_3 m_3} &= \frac1{\bar N}\sum_{j}\sum_{\ell_1\ell_2}
        R^{(t)}_{k,\ell_1\ell_2\ell_3}(r_{ij})\,C^{\ell_3 m_3}_{\ell_1 m_1 \ell_2 m_2}\,
        \tilde h^{(t)}_{j,k\ell_1 m_1} Y_{\ell_2 m_2}(\hat r_{ij}),
        \qquad \tilde h = W_{up}h,\ \ R = \textstyle\sum_n W_{n} B_n(r) \\
    B^{(t)}_{i,kLM} &= \sum_{\nu=1}^{\nu_{max}}\sum_\eta W^{(t)}_{z_i,k\eta\nu L}
        \sum_{\ell m} U^{LM}_{\eta,\ell_1m_1\dots\ell_\nu m_\nu}
        \prod_{\xi=1}^{\nu} (W_A A^{(t)}_i)_{k\ell_\xi m_\xi} \\
    h^{(t+1)}_{i,kLM} &= \sum_{k'} W_{out,kk'L} B^{(t)}_{i,k'LM} + \sum_{k'} W_{z_i,kk'L}\,h^{(t)}_{i,k'LM}

with C the Clebsch-Gordan coefficients, U the basis of symmetric tensor products
(``e3nn.reduced_symmetric_tensor_product_basis``), :math:`\bar N` the ``n_norm``
neighbour count of the training statistics (:func:`lrnn.models.deeppot.compute_stats`),
and only natural-parity irreps (:math:`(-1)^\ell`) kept, so the energy is invariant
under rotations, reflections, translations and permutations.  Node features carry
:math:`\ell \le` ``hidden_l`` between layers (scalars only after the last one).  The
sum over :math:`\ell m` is evaluated as one GEMM per order ν: the distinct monomials
:math:`x_{i_1}\cdots x_{i_\nu}` (:math:`i_1 \le \dots \le i_\nu`) of the channel's A
vector times U with the permutation multiplicities folded in.

The invariant descriptor of atom i is :math:`D_i = [h^{(1)}_{i,k0}, \dots, h^{(T)}_{i,k0}]`
(plus the far-field features if configured); the atomic energy is a per-species MLP
:math:`\mathcal F_{z_i}(D_i)` (``readout``), and every long-range term of ``long_range``
receives the same :math:`D_i`, exactly as with DeepPot-SE (the composition of
:class:`lrnn.models.base.LocalModel`).  Forces and virial come from ``jax.grad`` (:mod:`lrnn.potential`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrnn.models.base import LocalConfig, LocalModel
from lrnn.nn import StackedMLP

SILU_NORM = 1.6791767923989418  # 1/sqrt(E[silu(z)^2]), z ~ N(0, 1): unit second moment


@dataclasses.dataclass(frozen=True)
class EquivariantConfig(LocalConfig):
    """Hyper-parameters (lengths in Å): those of :class:`lrnn.models.base.LocalConfig`
    (``rcut_smth`` only enters the neighbour statistics) plus the message passing's."""

    rcut: float = 5.0
    activation: str = "silu"  # readout MLP
    channels: int = 32  # k: channels of every irrep
    l_max: int = 2  # spherical harmonics and the atomic basis A: l <= l_max
    hidden_l: int = 1  # node features passed between layers: l <= hidden_l
    correlation: int = 3  # nu_max: body order nu_max + 1
    n_layers: int = 2
    n_radial: int = 8  # Bessel functions
    envelope_p: int = 5
    radial_mlp: tuple = ()  # hidden widths of the radial net; () = linear in the Bessel basis (PaiNN)
    readout: tuple = (16,)

    def __post_init__(self):
        super().__post_init__()
        for k in ("radial_mlp", "readout"):
            object.__setattr__(self, k, tuple(int(x) for x in getattr(self, k)))
        checks = {"channels": 1, "n_layers": 1, "n_radial": 1, "correlation": 1, "envelope_p": 2,
                  "l_max": 0, "hidden_l": 0}
        for k, lo in checks.items():
            if int(getattr(self, k)) < lo:
                raise ValueError(f"{k} must be >= {lo}, got {getattr(self, k)}")
        if self.hidden_l > self.l_max:
            raise ValueError(f"hidden_l ({self.hidden_l}) must not exceed l_max ({self.l_max})")
        if self.l_max > 4 or self.correlation > 4:
            raise ValueError("l_max <= 4 and correlation <= 4 (cost grows as (l_max+1)^(2 correlation))")


def _irreps(l_max: int) -> str:
    return "+".join(f"{l}{'eo'[l % 2]}" for l in range(l_max + 1))


@functools.lru_cache(maxsize=None)
def _sym_basis(l_max: int, nu: int, L: int) -> np.ndarray:
    """U: (D,)*nu + (P, 2L+1), D = (l_max+1)^2, for the natural-parity output L."""
    import e3nn_jax as e3nn

    ir = f"{L}{'eo'[L % 2]}"
    u = e3nn.reduced_symmetric_tensor_product_basis(e3nn.Irreps(_irreps(l_max)), nu, keep_ir=[ir])
    arr = np.asarray(u.filter(keep=ir).array)
    return arr.reshape(arr.shape[:-1] + (-1, 2 * L + 1))


@functools.lru_cache(maxsize=None)
def _monomial_basis(l_max: int, nu: int, l_out: int):
    """The order-nu symmetric contraction as one matrix over monomials: indices (n, nu)
    of the monomials x_i x_j ... (i <= j <= ..., those some output needs) and Ũ (n, cols),
    Ũ = U times the number of index permutations; columns (L, p, m) for L = 0..l_out."""
    d = (l_max + 1) ** 2
    idx = np.asarray(list(itertools.combinations_with_replacement(range(d), nu)), np.int32).reshape(-1, nu)
    mult = np.asarray([math.factorial(nu) / np.prod([math.factorial(c) for c in np.unique(t, return_counts=True)[1]])
                       for t in idx])
    u = np.concatenate([_sym_basis(l_max, nu, L)[tuple(idx.T)].reshape(len(idx), -1) for L in range(l_out + 1)], 1)
    u = u * mult[:, None]
    keep = np.abs(u).max(axis=1) > 1e-10
    return idx[keep], u[keep]


@functools.lru_cache(maxsize=None)
def _cg(l1: int, l2: int, l3: int) -> np.ndarray:
    import e3nn_jax as e3nn

    return np.asarray(e3nn.clebsch_gordan(l1, l2, l3)) * math.sqrt(2 * l3 + 1)


def _paths(l_in: int, l_max: int):
    """(l1, l2, l3) of h (l1 <= l_in) x Y (l2 <= l_max) -> A (l3 <= l_max), natural parity."""
    return tuple((l1, l2, l3) for l1 in range(l_in + 1) for l2 in range(l_max + 1)
            for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1) if (l1 + l2 + l3) % 2 == 0)


def envelope(d, p: int):
    """Polynomial envelope u(d) (module docstring): 1 at 0, C² to zero at d = 1, zero beyond."""
    dc = jnp.minimum(d, 1.0)
    u = 1 - (p + 1) * (p + 2) / 2 * dc**p + p * (p + 2) * dc ** (p + 1) - p * (p + 1) / 2 * dc ** (p + 2)
    return jnp.where(d < 1.0, u, 0.0)


def _normal(rngs, shape, dtype, scale=1.0):
    """N(0, scale²) parameters drawn by NumPy from a key of ``rngs`` (no per-shape compile)."""
    key = rngs.params()
    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    w = np.random.default_rng([int(x) for x in seed.ravel()]).standard_normal(shape) * scale
    return nnx.Param(jnp.asarray(w, dtype))


class Interaction(nnx.Module):
    """One MACE layer: atomic basis A from h and the edges, symmetric contraction B,
    linear update plus a species-dependent residual (module docstring).  Features are
    channels-last, (rows, 2l+1, C), so every contraction is a plain (batched) GEMM.
    Weights are N(0, 1) and scaled by 1/sqrt(fan-in) where used (e3nn normalisation)."""

    def __init__(self, cfg: EquivariantConfig, l_in: int, l_out: int, *, rngs, dtype):
        c, t = cfg.channels, cfg.n_types
        self.l_in, self.l_out, self.l_max, self.nu = l_in, l_out, cfg.l_max, cfg.correlation
        self.paths = _paths(l_in, cfg.l_max)
        self.w_up = _normal(rngs, (l_in + 1, c, c), dtype)
        sizes = (cfg.n_radial,) + cfg.radial_mlp
        self.radial_sizes = sizes
        for k in range(len(sizes) - 1):  # bias-free: a zero basis (beyond r_c, padding) gives zero weights
            setattr(self, f"w_hidden{k}", _normal(rngs, sizes[k:k + 2], dtype))
        self.w_radial = _normal(rngs, (len(self.paths), sizes[-1], c), dtype)
        self.w_a = _normal(rngs, (cfg.l_max + 1, c, c), dtype)
        for L in range(l_out + 1):  # weights of the paths of every order into L, per species and channel
            p = sum(_sym_basis(cfg.l_max, nu, L).shape[-2] for nu in range(1, self.nu + 1))
            setattr(self, f"w_sym{L}", _normal(rngs, (t, p, c), dtype, 1.0 / p))
        self.w_out = _normal(rngs, (l_out + 1, c, c), dtype)
        self.w_skip = _normal(rngs, (t, min(l_in, l_out) + 1, c, c), dtype)

    def __call__(self, h, senders, sh, radial, row_mask, species, n_norm):
        """h: list over l of (R, 2l+1, C); senders (R, K) rows (R = zero row); sh list over
        l of (R, K, 2l+1); radial (R, K, n_radial); species (R,) static NumPy."""
        sizes = self.radial_sizes
        c = self.w_up.shape[-1]
        dt = radial.dtype
        for k in range(len(sizes) - 1):
            radial = SILU_NORM * jax.nn.silu(radial @ (getattr(self, f"w_hidden{k}")[...] / math.sqrt(sizes[k])))
        h_up = [h[l] @ (self.w_up[l] / math.sqrt(c)) for l in range(self.l_in + 1)]
        hs = [jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], dt)])[senders] for x in h_up]  # (R, K, 2l+1, C)
        a = [None] * (self.l_max + 1)
        for p, (l1, l2, l3) in enumerate(self.paths):
            w = radial @ (self.w_radial[p] / math.sqrt(sizes[-1]))  # (R, K, C)
            y = jnp.einsum("rkj,ijm->rkim", sh[l2], jnp.asarray(_cg(l1, l2, l3), dt))  # CG folded into Y
            term = jnp.einsum("rkim,rkic->rmc", y, hs[l1] * w[:, :, None, :])
            a[l3] = term if a[l3] is None else a[l3] + term
        counts = [sum(p[2] == l for p in self.paths) for l in range(self.l_max + 1)]
        a = [a[l] @ (self.w_a[l] / (math.sqrt(c * counts[l]) * n_norm)) for l in range(self.l_max + 1)]
        # symmetric contraction: monomials of A (per channel) times the basis, one GEMM per order
        x = jnp.swapaxes(jnp.concatenate(a, axis=1), 1, 2)  # (R, C, D): GEMMs over D
        parts = [[] for _ in range(self.l_out + 1)]
        for nu in range(1, self.nu + 1):
            idx, u = _monomial_basis(self.l_max, nu, self.l_out)
            onehot = np.eye(x.shape[-1])[:, idx]  # (D, n, nu): x_i = x @ onehot (no gathers)
            mono = x @ jnp.asarray(onehot[:, :, 0], dt)
            for k in range(1, nu):
                mono = mono * (x @ jnp.asarray(onehot[:, :, k], dt))  # (R, C, n)
            t_all, lo = jnp.swapaxes(mono @ jnp.asarray(u, dt), 1, 2), 0  # (R, cols, C)
            for L in range(self.l_out + 1):
                p = _sym_basis(self.l_max, nu, L).shape[-2]
                parts[L].append(t_all[:, lo:lo + p * (2 * L + 1)].reshape(-1, p, 2 * L + 1, c))
                lo += p * (2 * L + 1)
        out = []
        for L in range(self.l_out + 1):
            w_sym = getattr(self, f"w_sym{L}")[species]  # (R, P, C)
            b = jnp.einsum("rpmc,rpc->rmc", jnp.concatenate(parts[L], axis=1), w_sym)
            res = b @ self.w_out[L]
            if L <= self.l_in:
                res = res + jnp.einsum("rmc,rcd->rmd", h[L], self.w_skip[species, L])
            out.append(res * (row_mask[:, None, None] / math.sqrt(c)))
        return out


class Equivariant(LocalModel):
    """MACE-like local model (module docstring); the energy, charges and long-range
    composition are :class:`lrnn.models.base.LocalModel`'s."""

    def __init__(self, config: EquivariantConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        t, c = config.n_types, config.channels
        self.embed = _normal(rngs, (t, c), dtype)
        for k in range(config.n_layers):
            l_in = 0 if k == 0 else config.hidden_l
            l_out = config.hidden_l if k < config.n_layers - 1 else 0
            setattr(self, f"layer{k}", Interaction(config, l_in, l_out, rngs=rngs, dtype=dtype))
        d = self.descriptor_width
        self.fitting = StackedMLP(t, (d,) + config.readout + (1,), act=config.activation, linear_output=True,
                                  resnet=False, bias_std=0.0, dtype=dtype, rngs=rngs)
        self.add_terms(d, rngs, dtype)

    @property
    def descriptor_width(self) -> int:
        cfg = self.config
        return cfg.channels * cfg.n_layers + (cfg.n_types if cfg.far_field else 0)

    def descriptors(self, inputs, stats):
        """Per centre species ``a``: D (C_a, descriptor_width) and the centre mask (C_a,)."""
        cfg = self.config
        pos = inputs.positions
        dt = pos.dtype
        n = pos.shape[0]
        lay = inputs.layout
        blocks, lo = [], 0
        for a in range(cfg.n_types):
            m = lay.centres[a].shape[0]
            if m:
                blocks.append((a, lo, lo + m))
            lo += m
        if not blocks:
            return [None] * cfg.n_types
        cen = jnp.concatenate([lay.centres[a] for a, _, _ in blocks])  # (R,)
        r_tot = cen.shape[0]
        nb = jnp.concatenate([lay.neighbors[a].reshape(lay.neighbors[a].shape[0], -1) for a, _, _ in blocks])
        shifts = jnp.concatenate([lay.shifts[a].reshape(lay.shifts[a].shape[0], -1, 3) for a, _, _ in blocks])
        row_mask = cen < n
        # atom -> row map; padding atoms (index n) -> the zero row r_tot
        inv = jnp.full((n + 1,), r_tot, jnp.int32).at[jnp.where(row_mask, cen, n + 1)].set(
            jnp.arange(r_tot, dtype=jnp.int32), mode="drop")
        senders = inv[jnp.minimum(nb, n)]
        pos_ext = jnp.concatenate([pos, jnp.zeros((1, 3), dt)], axis=0)
        vec = pos_ext[nb] - pos_ext[cen][:, None, :] + shifts.astype(dt) @ inputs.cell.astype(dt)
        mask = (nb < n) & row_mask[:, None]
        vec = jnp.where(mask[..., None], vec, jnp.asarray([cfg.rcut, 0.0, 0.0], dt) * 2)  # safe norm
        r = jnp.sqrt(jnp.sum(vec * vec, axis=-1))
        d = r / cfg.rcut
        nn_ = jnp.arange(1, cfg.n_radial + 1, dtype=dt)
        radial = jnp.sin(nn_ * jnp.pi * d[..., None]) / d[..., None] * (envelope(d, cfg.envelope_p) * mask)[..., None]
        import e3nn_jax as e3nn

        y = e3nn.sh(list(range(cfg.l_max + 1)), vec, True, "component")
        sh = [y[..., l * l:(l + 1) * (l + 1)] for l in range(cfg.l_max + 1)]
        species = np.concatenate([np.full((hi - lo,), a, np.int32) for a, lo, hi in blocks])
        h = [(self.embed[species] * row_mask[:, None])[:, None, :]]  # (R, 1, C)
        n_norm = jnp.asarray(stats["n_norm"], dt)
        feats = []
        for k in range(cfg.n_layers):
            h = getattr(self, f"layer{k}")(h, senders, sh, radial, row_mask.astype(dt), species, n_norm)
            feats.append(h[0][:, 0, :])
        if cfg.far_field:
            ff = self.far_field_features(inputs)
            ff = jnp.concatenate([ff, jnp.zeros((1, ff.shape[1]), ff.dtype)])
            feats.append(ff[jnp.minimum(cen, n)])
        desc = jnp.concatenate(feats, axis=-1)
        out = [None] * cfg.n_types
        for a, lo, hi in blocks:
            out[a] = (desc[lo:hi], row_mask[lo:hi])
        return out
