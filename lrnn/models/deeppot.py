r"""DeepPot-SE (se_e2_a) short-range potential.

.. math::

    E = \sum_i \big[\mathcal F_{t_i}(D_i) + e_{t_i}\big]

with :math:`D_i` the se_e2_a descriptor (:mod:`lrnn.descriptors.se_e2_a`), one fitting
net :math:`\mathcal F_t` per centre species, and per-element energy shifts :math:`e_t`
(eV) fitted by least squares on the training set (kept in float64 outside the network,
see :class:`lrnn.potential.Potential`).  Forces :math:`F = -\nabla_R E` and the virial
:math:`W = -\partial E/\partial\varepsilon` (strain) come from ``jax.grad``.

Descriptor inputs are normalised per centre species with statistics of the training
set: the embedding input is :math:`(s - \bar s_t)/\sigma_t` and the environment matrix is
divided by :math:`(\sigma_t, \sigma^{dir}_t, \sigma^{dir}_t, \sigma^{dir}_t)`; no mean is
subtracted from the matrix, so a neighbour at the cutoff contributes exactly zero and the
energy does not depend on padding.

``two_body: true`` appends the first column of :math:`T_i`,
:math:`T_{i,m0} = \frac{1}{N_c}\sum_j G_{j,m}\, s_j/\sigma_t` (DeePMD's radial
se_e2_r descriptor, computed for free), to :math:`D_i`.  :math:`D_i` is quadratic in the
neighbour sums, so a pair-additive energy :math:`\sum_j \phi(r_{ij})` (a steep
repulsion, say) needs the fitting net to take a square root over the whole dynamic range;
the linear features make it one linear map.

``fit_norm: true`` standardises the fitting-net input per centre species and feature,
:math:`\tilde D_i = (D_i - \bar D_t)/\sigma^D_t`, with the mean and standard deviation over
the training set's centres of the descriptor of the *initial* weights
(:func:`fit_input_stats`; kept fixed in the statistics, so the model stays one function of
its parameters).  Features whose spread over the data is small (a lone N atom's environment
varies by ~0.03 against magnitudes ~0.4) would otherwise need large first-layer weights before
they can carry energy differences: energy-only training then sits at the predict-the-mean
plateau for thousands of steps (rMD17 paracetamol, 64 structures, full-batch Adam at 1e-3:
energy MSE 1.7e-4 vs 3.7e-6 eV²/atom² after 1,500 steps without and with it, against a label
variance of ~2e-4; ``experiments/thesis_table/energy_only_plateau.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrnn.descriptors.se_e2_a import env_matrix
from lrnn.longrange.grid import grid_cells, grid_env
from lrnn.models.base import LocalConfig, LocalModel
from lrnn.nn import StackedMLP


@dataclasses.dataclass(frozen=True)
class DeepPotConfig(LocalConfig):
    """Hyper-parameters (lengths in Å): those of :class:`lrnn.models.base.LocalConfig` plus the
    se_e2_a descriptor's and the fitting nets'."""

    embed: tuple = (25, 50, 100)
    axis_neurons: int = 16
    fit: tuple = (240, 240, 240)
    grid: tuple = ()  # (spacing Å, cells per axis): the thesis's fixed-grid descriptor (baseline)
    two_body: bool = False  # append the linear radial features T_i[:, 0] (se_e2_r-like) to D
    # evaluation setting, not physics: the descriptor is computed in chunks of centres whose
    # embedding output (centres x T x S x M1 floats) stays under this many bytes, each chunk
    # recomputed in the backward pass (jax.checkpoint), so memory is O(N) with a small
    # constant; the values are those of the unchunked evaluation
    chunk_bytes: int = 2**26

    def __post_init__(self):
        super().__post_init__()
        g = self.grid
        if isinstance(g, dict):
            g = (g.get("spacing", 4.0), g.get("n_cells", 8))
        object.__setattr__(self, "grid", tuple(g))
        if self.grid and not (len(self.grid) == 2 and self.grid[0] > 0 and int(self.grid[1]) >= 1):
            raise ValueError(f"grid needs spacing > 0 Å and n_cells >= 1, got {self.grid}")
        object.__setattr__(self, "embed", tuple(int(x) for x in self.embed))
        object.__setattr__(self, "fit", tuple(int(x) for x in self.fit))
        if self.axis_neurons > self.embed[-1]:
            raise ValueError(f"axis_neurons ({self.axis_neurons}) must not exceed the last embedding "
                             f"width ({self.embed[-1]})")
        if int(self.chunk_bytes) < 1:
            raise ValueError(f"chunk_bytes must be a positive number of bytes, got {self.chunk_bytes}")


class DeepPotSE(LocalModel):
    """se_e2_a descriptor + per-species fitting nets (see module docstring); the energy and the
    long-range composition are :class:`lrnn.models.base.LocalModel`'s."""

    def __init__(self, config: DeepPotConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        t = config.n_types
        self.embedding = StackedMLP(t * t, (1,) + config.embed, act=config.activation, linear_output=False,
                                    dtype=dtype, rngs=rngs)
        d_far = t if config.far_field else 0
        if config.two_body:
            d_far += config.embed[-1]
        if config.grid:
            m1 = config.embed[-1]
            self.grid_embedding = StackedMLP(1, (1 + t,) + config.embed, act=config.activation,
                                             linear_output=False, dtype=dtype, rngs=rngs)
            d_far += m1 * config.axis_neurons
        self.fitting = StackedMLP(t, (config.embed[-1] * config.axis_neurons + d_far,) + config.fit + (1,),
                                  act=config.activation, linear_output=True, bias_std=1.0, dtype=dtype,
                                  rngs=rngs)
        self.add_terms(config.embed[-1] * config.axis_neurons + d_far, rngs, dtype)

    def descriptors(self, inputs, stats):
        """Per centre species ``a``: D (C_a, M1*M2) and the centre mask (C_a,)."""
        cfg = self.config
        t = cfg.n_types
        pos = inputs.positions
        n = pos.shape[0]
        pos_ext = jnp.concatenate([pos, jnp.zeros((1, 3), pos.dtype)], axis=0)
        cell = inputs.cell.astype(pos.dtype)
        lay = inputs.layout
        out = []
        extra = []  # per-atom far-field features (N, .) appended to D
        if cfg.far_field:
            extra.append(self.far_field_features(inputs))
        if cfg.grid:
            extra.append(self._grid_descriptor(inputs, pos, n))
        far = None
        if extra:
            far = jnp.concatenate(extra, axis=-1)
            far = jnp.concatenate([far, jnp.zeros((1, far.shape[1]), far.dtype)], axis=0)
        for a in range(t):
            cidx = lay.centres[a]
            if cidx.shape[0] == 0:
                out.append(None)
                continue

            def local(cidx, nb, shifts, a=a):  # the se_e2_a descriptor of these centres
                scale = jnp.stack([stats["s_std"][a]] + [stats["dir_std"][a]] * 3).astype(pos.dtype)
                d = pos_ext[nb] - pos_ext[cidx][:, None, None, :] + shifts.astype(pos.dtype) @ cell
                mask = (nb < n) & (cidx < n)[:, None, None]
                env = env_matrix(d, mask, cfg.rcut_smth, cfg.rcut)  # (C, T, S, 4)
                x = ((env[..., :1] - stats["s_avg"][a]) / stats["s_std"][a]).astype(pos.dtype)
                g = self.embedding(slice(a * t, (a + 1) * t), x)  # (C, T, S, M1)
                tmat = jnp.einsum("cbsm,cbsk->cmk", g, env / scale) / stats["n_norm"]
                dmat = jnp.einsum("cmk,cnk->cmn", tmat, tmat[:, : cfg.axis_neurons, :])
                dflat = dmat.reshape(cidx.shape[0], -1)
                if cfg.two_body:  # linear in the neighbour sum: pair-additive energies need no square root
                    dflat = jnp.concatenate([dflat, tmat[:, :, 0]], axis=-1)
                return dflat

            dflat = chunked(local, (cidx, lay.neighbors[a], lay.shifts[a]),
                            self._chunk_centres(lay.neighbors[a].shape[1:], pos.dtype))
            if far is not None:
                dflat = jnp.concatenate([dflat, far[cidx]], axis=-1)
            out.append((dflat, cidx < n))
        return out

    def _chunk_centres(self, per_centre: tuple, dtype) -> int:
        """Centres per chunk: the (T, S, M1) embedding output of a chunk under ``chunk_bytes``."""
        size = int(np.prod(per_centre)) * self.config.embed[-1] * jnp.dtype(dtype).itemsize
        return max(1, int(self.config.chunk_bytes) // max(size, 1))

    def _grid_descriptor(self, inputs, pos, n):
        """Thesis grid descriptor (N, M1*M2) of :mod:`lrnn.longrange.grid`."""
        cfg = self.config
        t = cfg.n_types
        types = inputs.types
        mask = types >= 0
        numbers = jnp.asarray(cfg.type_map)[jnp.clip(types, 0, t - 1)]
        centre, counts, occ = grid_cells(pos, numbers, mask, cfg.grid[0], int(cfg.grid[1]), t, types)
        env, use = grid_env(pos, centre, occ, cfg.rcut)
        x = jnp.concatenate([env[..., :1] * cfg.rcut, jnp.broadcast_to(counts[None] / 10.0,
                                                                       env.shape[:2] + (t,))], -1)
        g = self.grid_embedding(0, x) * use[..., None]
        tmat = jnp.einsum("ckm,ckl->cml", g, env * cfg.rcut) / 10.0
        dmat = jnp.einsum("cml,cnl->cmn", tmat, tmat[:, : cfg.axis_neurons, :])
        return dmat.reshape(n, -1)


def chunked(fn, args: tuple, chunk: int):
    """``fn(*args)`` for arrays ``args`` with a common leading (centre) axis, computed
    ``chunk`` rows at a time with :func:`jax.lax.map` when there are more; each chunk is
    rematerialised in the backward pass (:func:`jax.checkpoint`), so peak memory holds one
    chunk's intermediates.  Padded rows repeat the last one and are dropped."""
    c = args[0].shape[0]
    if c <= chunk:
        return fn(*args)
    n_chunks = -(-c // chunk)
    chunk = -(-c // n_chunks)  # balanced: fewer than n_chunks padded rows in all
    idx = jnp.minimum(jnp.arange(n_chunks * chunk), c - 1)
    blocks = tuple(x[idx].reshape((n_chunks, chunk) + x.shape[1:]) for x in args)
    out = jax.lax.map(jax.checkpoint(lambda b: fn(*b)), blocks)
    return out.reshape((n_chunks * chunk,) + out.shape[2:])[:c]


def compute_stats(config: DeepPotConfig, positions, cells, layout, max_structures: int = 1000):
    """Per-centre-species normalisation statistics from training data (NumPy out).

    ``s_avg``, ``s_std``: mean and std of s(r) over pairs inside the cutoff; ``dir_std``:
    RMS of the directional components s·x/r; ``n_norm``: the largest number of neighbours
    inside the cutoff (the 1/N_c of the descriptor)."""
    m = min(len(positions), max_structures)
    t = config.n_types
    s_avg, s_std, d_std = np.zeros(t), np.ones(t), np.ones(t)
    n_max = 1.0
    pos = np.asarray(positions[:m])
    cells = np.asarray(cells[:m])
    n = pos.shape[1]
    lay = jax.tree.map(lambda x: np.asarray(x[:m]), layout)
    pe = np.concatenate([pos, np.zeros((m, 1, 3))], axis=1)
    for a in range(t):
        nb, cidx = lay.neighbors[a], lay.centres[a]
        if nb.shape[-1] == 0 or cidx.shape[-1] == 0:
            continue
        rc = pe[np.arange(m)[:, None], cidx]
        rn = pe[np.arange(m)[:, None, None, None], nb]
        d = rn - rc[:, :, None, None, :] + np.einsum("mcbsk,mkl->mcbsl", lay.shifts[a], cells)
        mask = (nb < n) & (cidx < n)[..., None, None]
        env = np.asarray(env_matrix(jnp.asarray(d), jnp.asarray(mask), config.rcut_smth, config.rcut))
        inside = mask & (env[..., 0] > 0)
        if inside.sum() == 0:
            continue
        s = env[..., 0][inside]
        dd = env[..., 1:][inside].ravel()
        s_avg[a], s_std[a] = s.mean(), max(s.std(), 1e-2)
        d_std[a] = max(np.sqrt(np.mean(dd * dd)), 1e-2)
        n_max = max(n_max, float(inside.sum(axis=(-1, -2)).max()))
    return {"s_avg": s_avg, "s_std": s_std, "dir_std": d_std, "n_norm": np.asarray(n_max)}


def fit_input_stats(model: LocalModel, inputs, stats, max_structures: int = 256, batch: int = 16) -> dict:
    """Per centre species: mean and standard deviation (floored at 1e-2 of the mean magnitude,
    and at 1e-6) of each fitting-input feature over the centres of up to ``max_structures``
    structures of ``inputs`` (batched model inputs), for the model's current weights (NumPy out:
    ``d_avg``, ``d_std`` of shape (n_types, width); species absent from the data get 0 and 1)."""
    m = min(int(inputs.positions.shape[0]), max_structures)
    sj = {k: jnp.asarray(v) for k, v in stats.items()}
    per_struct = jax.jit(jax.vmap(lambda x: model.descriptors(x, sj)))
    t = model.config.n_types
    acc = [[] for _ in range(t)]
    for i in range(0, m, batch):
        desc = per_struct(jax.tree.map(lambda x: jnp.asarray(x[i:min(i + batch, m)]), inputs))
        for a, item in enumerate(desc):
            if item is not None:
                d, mask = np.asarray(item[0], np.float64), np.asarray(item[1])
                acc[a].append(d[mask])
    width = next(x[0].shape[1] for x in acc if x)
    avg, std = np.zeros((t, width)), np.ones((t, width))
    for a in (a for a in range(t) if acc[a]):
        d = np.concatenate(acc[a])
        if len(d):
            avg[a] = d.mean(0)
            std[a] = np.maximum(d.std(0), np.maximum(1e-2 * np.abs(d).mean(), 1e-6))
    return {"d_avg": avg, "d_std": std}


def fit_energy_shift(numbers, energy, type_map: Sequence[int], rcond: float = 1e-8) -> np.ndarray:
    """Per-element energy shifts e_t (eV) by least squares: E ≈ Σ_t n_t e_t (float64)."""
    counts = np.stack([(np.asarray(numbers) == z).sum(axis=1) for z in type_map], axis=1).astype(np.float64)
    shift, *_ = np.linalg.lstsq(counts, np.asarray(energy, np.float64), rcond=rcond)
    return shift


def shift_energy(numbers, shift, type_map) -> np.ndarray:
    """Σ_t n_t e_t for each structure (eV, float64)."""
    counts = np.stack([(np.asarray(numbers) == z).sum(axis=-1) for z in type_map], axis=-1)
    return counts.astype(np.float64) @ np.asarray(shift, np.float64)
