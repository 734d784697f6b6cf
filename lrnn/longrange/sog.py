r"""Sum-of-Gaussians (SOG) long-range kernel (SOG-Net, Ji, Liang et al.).

.. math::

    E = \frac12 \sum_{i \ne j} q_i q_j \sum_{l=1}^{L} w_l\, e^{-r_{ij}^2 / s_l^2}

with learnable weights :math:`w_l` (eV/e²) and widths :math:`s_l` (Å).  Open boundaries:
an exact pair sum (:func:`sog_open`), or the O(N) hierarchical evaluation of
:func:`sog_hierarchical` (narrow Gaussians by a pair list, wider ones on grids whose
spacing grows with the width; see there).  Periodic cells: the reciprocal-space form, using the Fourier transform
:math:`\hat G(k) = \sum_l w_l \pi^{3/2} s_l^3 e^{-k^2 s_l^2/4}`,

.. math::

    E = \frac{1}{2V}\sum_{\mathbf k} \hat G(k)\, |S(\mathbf k)|^2 - \frac12 \sum_i q_i^2 \sum_l w_l,
    \qquad S(\mathbf k) = \sum_j q_j e^{i\mathbf k\cdot\mathbf r_j},

summing :math:`\mathbf k = 2\pi\, \mathbf n\, h^{-\top}` over integer :math:`|n_a| \le K`
(every periodic image included; the second term removes the self-interaction).  The
:math:`\mathbf k = 0` term is kept: for a neutral system :math:`S(0) = 0`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lrnn.longrange.coulomb import k_index_vectors
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


def sog_periodic(positions, charges, mask, cell, weights, widths, k_index_max):
    r"""Periodic SOG energy (eV) in reciprocal space; ``cell`` rows are the cell vectors (Å);
    ``k_index_max`` an int or one per cell vector (:func:`lrnn.longrange.coulomb.k_index_vectors`,
    here with :math:`\mathbf n = 0` added back: the SOG kernel's k = 0 term is finite)."""
    q = jnp.where(mask, charges, 0.0)
    nvec = jnp.asarray(np.vstack([np.zeros((1, 3)), k_index_vectors(k_index_max)]), positions.dtype)
    recip = 2.0 * jnp.pi * jnp.linalg.inv(cell).T  # rows b_a with a_i·b_j = 2π δ_ij
    k = nvec @ recip
    k2 = jnp.sum(k * k, axis=-1)
    ghat = jnp.sum(weights * jnp.pi**1.5 * widths**3 * jnp.exp(-k2[:, None] * widths**2 / 4.0), axis=-1)
    phase = k @ positions.T  # (K, N)
    s_re, s_im = jnp.cos(phase) @ q, jnp.sin(phase) @ q
    vol = jnp.abs(jnp.linalg.det(cell))
    return 0.5 / vol * jnp.sum(ghat * (s_re**2 + s_im**2)) - 0.5 * jnp.sum(q * q) * jnp.sum(weights)


# --- hierarchical evaluation for open boundaries -----------------------------------------

#: Default accuracy target of :func:`sog_plan`: kernel error per pair relative to e^0 = 1.
SOG_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class GridLevel:
    """One grid of the dyadic hierarchy (static).  Spacing ``h`` and spreading width ``a``
    (Å) double from level to level; ``origin`` (Å) and ``shape`` of the grid; the Gaussians
    ``widths`` (indices) it carries and their convolution half-lengths ``taps``;
    ``restrict_taps``: half-length of the restriction kernel from the level below (level 0:
    ``radius``, the half-width of the atoms' spreading stencil)."""

    h: float
    a: float
    origin: tuple
    shape: tuple
    widths: tuple
    taps: tuple
    restrict_taps: int


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SOGPlan:
    """Static layout for :func:`sog_hierarchical`, built outside ``jit`` by :func:`sog_plan`.

    ``pairs`` (P, 2) and ``pair_mask`` (P,): the pairs i < j within the direct cutoff
    (padded); ``ref_positions`` (N, 3) Å: the positions planned for (re-plan check);
    ``order`` (N,): the atoms in grid-cell order (for spreading).
    Static: ``levels`` (:class:`GridLevel`), ``direct`` (indices of the Gaussians summed over
    pairs), ``planned_widths`` (Å), ``tol``, ``skin`` (Å)."""

    pairs: jax.Array
    pair_mask: jax.Array
    ref_positions: jax.Array
    order: jax.Array
    levels: tuple
    direct: tuple
    planned_widths: tuple
    tol: float
    skin: float

    def tree_flatten(self):
        return ((self.pairs, self.pair_mask, self.ref_positions, self.order),
                (self.levels, self.direct, self.planned_widths, self.tol, self.skin))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def summary(self) -> dict:
        return {"direct_widths_A": [self.planned_widths[i] for i in self.direct],
                "n_pairs": int(np.asarray(self.pair_mask).sum()),
                "stencil": 2 * self.levels[0].restrict_taps + 1 if self.levels else 0,
                "levels": [{"h_A": lv.h, "a_A": lv.a, "shape": list(lv.shape),
                            "widths_A": [self.planned_widths[i] for i in lv.widths], "taps": list(lv.taps)}
                           for lv in self.levels]}


def _grid_ratio(tol):
    """a/h such that the trapezoid error of the grid convolution, about
    8 exp(-(3/4) π² a²/h²) for m² ≥ 2a², stays below ``tol``."""
    return math.sqrt(math.log(8.0 / tol) / (0.75 * math.pi**2))


def sog_plan(positions, widths, *, mask=None, tol: float = SOG_TOL, skin: float = 0.5,
             method: str = "auto", pair_bucket: int = 1024) -> SOGPlan:
    """Plan :func:`sog_hierarchical` for ``positions`` (N, 3) Å and Gaussian ``widths`` (Å).

    Each Gaussian goes either to the **pair list** (all pairs within s √ln(1/tol) + skin,
    from a k-d tree) or to a **grid level**.  Levels are made greedily from the sorted grid
    widths: a level takes the spreading width a = s_first/2 and every width s < 4a, so
    m² = s² − 2a² ≥ 2a² for all of its Gaussians; its spacing is h = a / ratio(tol) (about
    a/1.5 at tol = 1e-6), so wider Gaussians live on coarser grids and every level costs
    O(N) however wide its Gaussians are.  ``method``: ``"auto"`` (per width, the cheaper of
    the two by a flop estimate at the system's mean density), ``"grid"`` or ``"direct"``.
    The grids cover the atoms' bounding box plus ``skin``; atoms may move ``skin``/2 before
    :func:`sog_needs_replan` asks for a new plan."""
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or not np.all(np.isfinite(pos)):
        raise ValueError(f"sog_plan: positions must be finite (N, 3) Å, got shape {pos.shape}")
    real = np.ones(len(pos), bool) if mask is None else np.asarray(mask, bool)
    s_all = np.asarray(widths, np.float64).reshape(-1)
    if s_all.size == 0 or not np.all(np.isfinite(s_all)) or np.any(s_all <= 0):
        raise ValueError(f"sog_plan: widths must be positive and finite (Å), got {s_all}")
    if not 0 < tol < 1e-2:
        raise ValueError(f"sog_plan: tol must be in (0, 1e-2), got {tol}")
    if method not in ("auto", "grid", "direct"):
        raise ValueError(f"sog_plan: unknown method {method!r}; use auto, grid or direct")
    p_real = pos[real]
    n = max(len(p_real), 1)
    lo, hi = (p_real.min(0), p_real.max(0)) if len(p_real) else (np.zeros(3), np.zeros(3))
    ln = math.log(1.0 / tol)
    ratio = _grid_ratio(tol)
    radius = math.ceil(ratio * math.sqrt(ln) + 0.5)
    extent = np.maximum(hi - lo, 1.0) + 2 * skin
    density = n / float(np.prod(extent))
    order = [int(i) for i in np.argsort(s_all)]

    def cost(n_direct):
        """Relative cost (measured constants, 2-core CPU) with the n_direct narrowest
        Gaussians on the pair list and the rest on the grids."""
        c = 0.0
        if n_direct:
            r = s_all[order[n_direct - 1]] * math.sqrt(ln) + skin
            c += 0.5 * density * 4.0 / 3.0 * math.pi * r**3 * (3.0 + 0.3 * n_direct)
        if n_direct < len(order):
            h0 = s_all[order[n_direct]] / 2 / ratio
            c += (2 * radius + 1) ** 3 + 4.0 * float(np.prod(extent / h0 + 2 * radius)) / n
        return c

    if method == "direct":
        n_direct = len(order)
    elif method == "grid":
        n_direct = 0
    else:
        n_direct = min(range(len(order) + 1), key=cost)
    direct, grid = order[:n_direct], order[n_direct:]
    levels = []
    if grid:
        a0 = s_all[grid[0]] / 2
        n_lev = int(math.floor(math.log2(s_all[grid[-1]] / (2 * a0)))) + 1
        origin = lo - skin - (radius + 1) * (a0 / ratio)
        prev = None
        for k in range(n_lev):
            a, h = a0 * 2**k, a0 * 2**k / ratio
            if k:  # coarse point J sits on fine point 2J - shift of the level below
                origin = origin - (radius + 1) * prev.h
            shape = tuple(int(v) for v in np.ceil((hi + skin - origin) / h) + radius + 2)
            here = tuple(i for i in grid if 2 * a <= s_all[i] < 4 * a or (k == n_lev - 1 and s_all[i] >= 4 * a))
            taps = tuple(math.ceil(math.sqrt(s_all[i] ** 2 - 2 * a * a) * math.sqrt(ln) / h) for i in here)
            r_taps = radius if k == 0 else math.ceil(math.sqrt(3.0) * prev.a * math.sqrt(ln) / prev.h)
            prev = GridLevel(float(h), float(a), tuple(float(v) for v in origin), shape, here, taps, r_taps)
            levels.append(prev)
    pairs = np.zeros((0, 2), np.int64)
    if direct and len(p_real) > 1:
        from scipy.spatial import cKDTree

        r_d = max(s_all[i] for i in direct) * math.sqrt(ln) + skin
        idx = np.nonzero(real)[0]
        pairs = idx[cKDTree(p_real).query_pairs(r_d, output_type="ndarray")]
        pairs = pairs[np.lexsort(pairs.T[::-1])]  # by first atom: local gathers
    n_p = max(pair_bucket, -(-len(pairs) // pair_bucket) * pair_bucket) if direct else 0
    pm = np.zeros(n_p, bool)
    pm[:len(pairs)] = True
    padded = np.zeros((n_p, 2), np.int32)
    padded[:len(pairs)] = pairs
    atom_order = np.arange(len(pos))
    if levels:  # atoms in grid-cell order: the spreading scatter then walks the grid (cache) locally
        cell = np.floor((pos - lo) / (4 * levels[0].h)).astype(np.int64)
        atom_order = np.lexsort(cell.T[::-1])
    return SOGPlan(jnp.asarray(padded), jnp.asarray(pm), jnp.asarray(pos), jnp.asarray(atom_order, jnp.int32),
                   tuple(levels),
                   tuple(int(i) for i in direct), tuple(float(v) for v in s_all), float(tol), float(skin))


def sog_needs_replan(plan: SOGPlan, positions, widths, mask=None) -> bool:
    """True when ``positions`` moved more than ``skin``/2 from the planned ones (the pair
    list and the grids' margins no longer hold) or the widths differ from the planned ones
    (the level assignment depends on them).  NumPy, O(N)."""
    pos = np.asarray(positions, np.float64)
    ref = np.asarray(plan.ref_positions)
    s = np.asarray(widths, np.float64).reshape(-1)
    if pos.shape != ref.shape or s.shape != (len(plan.planned_widths),):
        return True
    if not np.allclose(s, plan.planned_widths, rtol=1e-12, atol=0):
        return True
    real = np.ones(len(pos), bool) if mask is None else np.asarray(mask, bool)
    return not bool(sog_plan_is_valid(plan, jnp.asarray(pos), jnp.asarray(real)))


def sog_plan_is_valid(plan: SOGPlan, positions, mask=None) -> jax.Array:
    """True (a traced bool) while every atom of ``positions`` (rows after the planned atoms
    are padding) lies within ``skin``/2 of its planned position: max_i |r_i − r_i⁰|² ≤
    (skin/2)².  Jittable, O(N); the widths are checked by :func:`sog_needs_replan`."""
    n = plan.ref_positions.shape[0]
    d2 = jnp.sum((positions[:n] - plan.ref_positions.astype(positions.dtype)) ** 2, axis=-1)
    if mask is not None:
        d2 = jnp.where(mask[:n], d2, 0.0)
    return jnp.all(d2 <= (plan.skin / 2) ** 2)


#: Bytes of stencil values (atoms × (2R+1)³ floats) one pass of :func:`_spread` builds.
SPREAD_CHUNK_BYTES = 2**26


def _spread(level: GridLevel, positions, q):
    r"""ρ_g = Σ_i q_i exp(−|z_g − r_i|²/a²) on the finest grid, each atom on its (2R+1)³
    nearest grid points (the Gaussian is below tol beyond them); returns the 3-D grid.

    The atoms are spread in chunks of at most :data:`SPREAD_CHUNK_BYTES` of stencil values,
    accumulated by a scan whose body is recomputed in the backward pass, so memory is the
    grid plus one chunk, not N·(2R+1)³."""
    h, a, R = level.h, level.a, level.restrict_taps
    o = jnp.asarray(level.origin, positions.dtype)
    gy, gz = level.shape[1], level.shape[2]
    size = int(np.prod(level.shape))
    stencil = jnp.arange(-R, R + 1)

    @jax.checkpoint
    def add(rho, chunk):
        x, qc = chunk
        base = jnp.round(jax.lax.stop_gradient((x - o) / h)).astype(jnp.int32)  # (C, 3)
        idx = base[:, :, None] + stencil[None, None, :]  # (C, 3, S)
        w = jnp.exp(-((idx * h + o[None, :, None] - x[:, :, None]) / a) ** 2)
        ok = (idx >= 0) & (idx < jnp.asarray(level.shape)[None, :, None])
        vals = qc[:, None, None, None] * w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]
        flat = (idx[:, 0, :, None, None] * gy + idx[:, 1, None, :, None]) * gz + idx[:, 2, None, None, :]
        valid = ok[:, 0, :, None, None] & ok[:, 1, None, :, None] & ok[:, 2, None, None, :]
        flat = jnp.where(valid, flat, size)
        return rho.at[flat.reshape(-1)].add(vals.reshape(-1), mode="drop"), None

    n = positions.shape[0]
    per_atom = (2 * R + 1) ** 3 * positions.dtype.itemsize
    c = max(1, min(n, SPREAD_CHUNK_BYTES // per_atom))
    n_pad = -(-n // c) * c
    x = jnp.concatenate([positions, jnp.broadcast_to(positions[:1], (n_pad - n, 3))])  # padding: zero charge
    qp = jnp.concatenate([q, jnp.zeros(n_pad - n, q.dtype)])
    rho, _ = jax.lax.scan(add, jnp.zeros(size, positions.dtype), (x.reshape(-1, c, 3), qp.reshape(-1, c)))
    return rho.reshape(level.shape)


def _restrict(fine: GridLevel, coarse: GridLevel, rho):
    r"""The spread density of the next level, a' = 2a on a grid of spacing 2h, from
    e^{−(Z−y)²/a'²} = a' h/(√π a b) Σ_g e^{−(Z−z_g)²/b²} e^{−(z_g−y)²/a²}, b² = a'² − a² = 3a²
    (the trapezoid rule, error ≈ tol), one strided 1-D convolution per axis."""
    t = coarse.restrict_taps
    b2 = 3.0 * fine.a**2
    d = jnp.arange(-t, t + 1) * fine.h
    kern = coarse.a * fine.h / (math.sqrt(math.pi) * fine.a * math.sqrt(b2)) * jnp.exp(-d * d / b2)
    shift = round((fine.origin[0] - coarse.origin[0]) / fine.h)
    for ax in range(3):
        rho = _convolve_axis(rho, kern, ax, stride=2, shift=shift + t, out_len=coarse.shape[ax])
    return rho


def _convolve_axis(x, kernel, axis, stride, shift, out_len):
    """y[J] = Σ_t kernel[t] x[stride·J − shift + t], J < out_len, along ``axis`` for a
    symmetric ``kernel`` (zero outside the grid: open boundaries).  By FFT of the
    zero-padded line (the full linear convolution), so its cost does not grow with the
    kernel length (XLA's CPU convolution also crashes in float64 for some shapes, jax 0.10)."""
    taps = kernel.shape[0]
    g_in = x.shape[axis]
    n = g_in + taps - 1
    nfft = 1 << (n - 1).bit_length()
    full = jnp.fft.irfft(jnp.fft.rfft(x, nfft, axis=axis)
                         * jnp.fft.rfft(kernel, nfft).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim)),
                         nfft, axis=axis)
    # full[k] = Σ_t kernel[t] x[k − t]; want x[stride·J − shift + t] with kernel symmetric:
    # Σ_t kernel[t] x[stride·J − shift + t] = full[stride·J − shift + taps − 1]
    start = taps - 1 - shift
    idx = start + stride * np.arange(out_len)
    ok = (idx >= 0) & (idx < n)
    y = jnp.take(full, jnp.asarray(np.clip(idx, 0, nfft - 1)), axis=axis)
    if not ok.all():
        shape = [1] * x.ndim
        shape[axis] = out_len
        y = y * jnp.asarray(ok, x.dtype).reshape(shape)
    return y


def _grid_energy(level: GridLevel, rho, weights, widths):
    r"""½ ρᵀ (Σ_l w_l K_l) ρ on one level, by Parseval: the grid zero-padded to n ≥ G + T per
    axis (the circular convolution then equals the linear one on the grid), ρ̂ = rfftn(ρ) and
    ½ n⁻³ Σ_k |ρ̂_k|² Σ_l w_l K̂_l,x K̂_l,y K̂_l,z with the real spectra
    K̂(k) = K₀ + 2 Σ_{t≥1} K_t cos(2π k t / n) of the symmetric 1-D kernels."""
    from scipy.fft import next_fast_len

    t_max = max(level.taps)
    n = [next_fast_len(g + t_max + 1) for g in level.shape]
    power = jnp.abs(jnp.fft.rfftn(rho, n)) ** 2
    nz = n[2] // 2 + 1
    mult = np.full(nz, 2.0)
    mult[0] = 1.0
    if n[2] % 2 == 0:
        mult[-1] = 1.0  # the rfft half-spectrum counts the other modes twice
    power = power * jnp.asarray(mult, rho.dtype)
    total = 0.0
    for li, taps in zip(level.widths, level.taps):
        s = widths[li]
        m2 = s * s - 2 * level.a**2
        t = np.arange(taps + 1)
        kern = s * level.h**2 / (jnp.pi * jnp.sqrt(m2) * level.a**2) * jnp.exp(-(t * level.h) ** 2 / m2)
        kern = kern * jnp.asarray(np.where(t == 0, 1.0, 2.0), rho.dtype)
        spec = [jnp.cos(2 * np.pi * np.outer(np.arange(nk), t) / nd) @ kern
                for nk, nd in ((n[0], n[0]), (n[1], n[1]), (nz, n[2]))]
        total = total + weights[li] * jnp.einsum("ijk,i,j,k->", power, *spec)
    return 0.5 * total / float(np.prod(n))


def sog_hierarchical(plan: SOGPlan, positions, charges, mask, weights, widths):
    r"""Open-boundary SOG energy (eV) in O(N) with the layout of :func:`sog_plan`.

    .. math::

        E = \tfrac12 \sum_{i \ne j} q_i q_j \sum_l w_l\, e^{-r_{ij}^2/s_l^2}

    *Pair-list Gaussians* are summed exactly over the planned pairs (i < j) within
    s_l √ln(1/tol).  *Grid Gaussians* use the exact factorisation (per Cartesian axis,
    s² = m² + 2a²)

    .. math::

        e^{-|\mathbf t-\mathbf y|^2/s^2} = \Big(\frac{s}{\pi m a^2}\Big)^{3}
        \iint e^{-|\mathbf t-\mathbf z_1|^2/a^2}\, e^{-|\mathbf z_1-\mathbf z_2|^2/m^2}\,
        e^{-|\mathbf z_2-\mathbf y|^2/a^2}\, d^3z_1\, d^3z_2 ,

    discretised by the trapezoid rule on the level's grid (spacing h):
    ρ_g = Σ_i q_i e^{−|z_g − r_i|²/a²}, E_level = ½ ρᵀ (Σ_l w_l K_l) ρ − ½ Σ_i q_i² Σ_l w_l, with
    the separable kernel K_l(d) = (s_l h²/(π m_l a²))³ e^{−|d h|²/m_l²} applied in Fourier
    space (:func:`_grid_energy`); each level's ρ is restricted from the finer one
    (:func:`_restrict`), so the atoms are spread once.  The trapezoid error is about 8 exp(−(3/4)π² a²/h²) ≤ tol, the
    truncations e^{−r²/a²}, e^{−r²/m²} ≤ tol.  The energy is differentiable in positions,
    charges, weights and widths (forces by ``jax.grad``); a plan is valid for its widths
    only (:func:`sog_needs_replan`).  Rows of ``positions`` after the planned atoms are
    padding and take no part."""
    if not isinstance(widths, jax.core.Tracer) and len(np.shape(widths)) == 1:
        if not np.allclose(np.asarray(widths, np.float64), plan.planned_widths, rtol=1e-12, atol=0):
            raise ValueError("sog_hierarchical: the widths differ from those the plan was made for; "
                             "make a new plan (sog_plan / sog_needs_replan)")
    n = plan.ref_positions.shape[0]
    if positions.ndim != 2 or positions.shape[0] < n:
        raise ValueError(f"sog_hierarchical: plan is for {n} atoms, got positions of shape {positions.shape}")
    # rows after the planned atoms are padding (a batch's fixed size): they take no part
    q = jnp.where(mask, charges, 0.0)[:n]
    positions = positions[:n]
    e = jnp.zeros((), positions.dtype)
    if plan.direct:
        i, j = plan.pairs[:, 0], plan.pairs[:, 1]
        d = positions[i] - positions[j]
        di = jnp.asarray(plan.direct)
        k = sog_kernel(jnp.sum(d * d, axis=-1), weights[di], widths[di])
        e = e + jnp.sum(jnp.where(plan.pair_mask, q[i] * q[j] * k, 0.0))
    rho, prev = None, None
    for lv in plan.levels:
        rho = (_spread(lv, positions[plan.order], q[plan.order]) if prev is None
               else _restrict(prev, lv, rho))
        prev = lv
        if not lv.widths:
            continue
        e = e + _grid_energy(lv, rho, weights, widths)
        e = e - 0.5 * jnp.sum(q * q) * jnp.sum(weights[jnp.asarray(lv.widths)])
    return e
