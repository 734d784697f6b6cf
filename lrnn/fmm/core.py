r"""The FMM evaluation for a fixed plan: a pure, jittable function of (positions, charges).

Passes (box side :math:`h_l = \text{size}/2^l`; expansions in box units, see
:mod:`lrnn.fmm.harmonics` for the maths of every operator):

1. **P2M** at the boxes that hold expansions (leaves, or the virtual children of leaves
   that touch finer boxes; see :mod:`lrnn.fmm.tree`), chunk by chunk:
   :math:`M_k = \sum_j q_j \hat R_k((\mathbf y_j - \mathbf c)/h_l)`.
2. **M2M** from the deepest level up to level 2: :math:`M^{\rm parent} \mathrel{+}= A_o M^{\rm child}`.
3. **M2L** at every level 2..L, all levels in one pass: the (target, source) pairs of the
   interaction lists are grouped by their offset (316 possible, the same operator at every
   level in box units) into tiles of ``P`` pairs, and each tile is one
   ``(P, K) @ (K, K)`` GEMM scattered into the targets' locals: only the pairs that exist
   cost work, however sparse the lists of a clustered input are.
4. **L2L** from level 2 down to ``L``: :math:`L^{\rm child} \mathrel{+}= B_o L^{\rm parent}`.
5. **L2P** at the same boxes as P2M: :math:`\phi_i \mathrel{+}= h_l^{-1}\sum_k L_k \hat R_k(\tilde{\mathbf x}_i)`.
6. **P2P**: the near field, for every pair of chunks of touching leaves, as dense
   ``leaf_size × (8·leaf_size)`` tiles (a target chunk against 8 source chunks): :math:`\phi_i \mathrel{+}= \sum_{j\ne i} q_j\,k(r_{ij}^2)`.

The near-field kernel ``k`` (a function of the squared distance; default ``1/r``) is
pluggable: any ``k`` that equals :math:`1/r` for :math:`r \ge h_L` yields
:math:`\sum_{j\ne i} q_j\,k(r_{ij}^2)` exactly up to the FMM error, because every pair
closer than the smallest box side (``plan.leaf_side``) is in the near field.  E.g. the far-field descriptor
:math:`\sum_j q_j (1 - f_c(r_{ij}))/r_{ij}` with cutoff :math:`r_c \le h_L` is
``near_kernel=lambda r2: (1 - f_c(sqrt(r2))) / sqrt(r2)`` with a plan built with
``min_leaf_side=r_c``.

Everything is differentiated by JAX autodiff (the plan is piecewise constant in the
positions, so gradients through a fixed plan are the exact gradients of the FMM
approximation).  Memory is bounded by tiling every pass with :func:`jax.lax.map` and
:func:`jax.checkpoint`.  If a particle has left its leaf (the plan is stale), the result is
NaN rather than silently wrong; eager callers get a re-plan (see :mod:`lrnn.fmm.api`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrnn.fmm.direct import inv_r_kernel
from lrnn.fmm.harmonics import n_coeffs, solid_harmonics
from lrnn.fmm.tree import CHUNK_BLOCK, E_CHUNK, P2P_BLOCK, FMMPlan, plan_is_valid

__all__ = ["potential_with_plan"]


def _tiled(fn, block, *arrays):
    """lax.map of a checkpointed ``fn`` over leading-axis tiles of ``block`` rows."""
    n = arrays[0].shape[0]
    nb = n // block
    assert nb * block == n, (n, block)
    tiles = tuple(a.reshape((nb, block) + a.shape[1:]) for a in arrays)
    out = jax.lax.map(jax.checkpoint(lambda t: fn(*t)), tiles)
    return out.reshape((n,) + out.shape[2:])


@jax.checkpoint
def _m2l(M_all, tgt, src, op, T):
    """Σ over M2L tiles: ``L[tgt] += M[src] @ T[op]`` (one (P, K) @ (K, K) GEMM per tile).

    A scan with the locals as carry; checkpointed so that reverse mode stores no
    per-tile residual (the operator of a tile is gathered again on the way back)."""
    def tile(loc, x):
        t, s, o = x
        return loc.at[t].add(M_all[s] @ T[o]), None

    return jax.lax.scan(tile, jnp.zeros_like(M_all), (tgt, src, op))[0]


def potential_with_plan(plan: FMMPlan, positions, charges, *, near_kernel=None,
                        check: bool = True):
    r"""φ_i = Σ_{j≠i} q_j / |r_i − r_j| by the FMM for a fixed ``plan`` (jittable).

    ``positions`` (N, 3) and ``charges`` (N,) in the plan's particle order; the dtype of
    ``positions`` is the working precision (use float64 for errors below ~1e-6).
    ``near_kernel(r2)`` replaces 1/r in the near field (see module docstring).
    With ``check`` (default) the result is NaN if some particle left its leaf.
    """
    positions = jnp.asarray(positions)
    dtype = positions.dtype
    charges = jnp.asarray(charges, dtype=dtype)
    if positions.shape != (plan.n, 3) or charges.shape != (plan.n,):
        raise ValueError(f"plan is for {plan.n} particles; got positions {positions.shape} "
                         f"and charges {charges.shape}")
    kernel = inv_r_kernel if near_kernel is None else near_kernel
    p, C, L = plan.order, plan.leaf_size, plan.depth
    K = n_coeffs(p)
    n = plan.n

    # expansion chunks: E_CHUNK particles of one box (a leaf or a leaf's virtual child)
    n_ech = plan.echunk_box.shape[0]
    ce = plan.box_center[plan.echunk_box].astype(dtype)  # (n_ech, 3)
    he = plan.box_side(plan.echunk_box, dtype)
    evalid = plan.eslot_src < n
    esrc = jnp.minimum(plan.eslot_src, n - 1)
    xe = jnp.where(evalid[:, None], positions[esrc],
                   jnp.repeat(ce, E_CHUNK, axis=0)).reshape(n_ech, E_CHUNK, 3)
    qe = jnp.where(evalid, charges[esrc], 0.0).reshape(n_ech, E_CHUNK)

    # 1. P2M
    def p2m(x, q, c, h):
        R = solid_harmonics((x - c[:, None, :]) / h[:, None, None], p, jnp)  # (B, E, K)
        return jnp.einsum("bc,bck->bk", q, R)

    m_chunk = _tiled(p2m, CHUNK_BLOCK, xe, qe, ce, he)
    m_box = jax.ops.segment_sum(m_chunk, plan.echunk_box, plan.box_offset[L] + plan.n_boxes[L])
    M = {lvl: m_box[plan.box_offset[lvl]:plan.box_offset[lvl] + plan.n_boxes[lvl]]
         for lvl in range(2, L + 1)}
    # 2. M2M
    m2m = plan.ops_m2m.astype(dtype)
    for lvl in range(L, 2, -1):
        par, octn = plan.parent[lvl - 3], plan.octant[lvl - 3]
        allo = (M[lvl] @ m2m).reshape(-1, 8, K)
        mine = jnp.take_along_axis(allo, octn[:, None, None], axis=1)[:, 0]
        M[lvl - 1] = M[lvl - 1] + jax.ops.segment_sum(mine, par, plan.n_boxes[lvl - 1])
    # 3. M2L, all levels at once (operators are the same at every level in box units)
    M_all = jnp.concatenate([M[lvl] for lvl in range(2, L + 1)])
    loc_all = _m2l(M_all, plan.m2l_tgt, plan.m2l_src, plan.m2l_op, plan.ops_m2l.astype(dtype))
    # 4. L2L
    l2l = plan.ops_l2l.astype(dtype)
    Lc = None
    locs = []
    for lvl in range(2, L + 1):
        loc = loc_all[plan.box_offset[lvl]:plan.box_offset[lvl] + plan.n_boxes[lvl]]
        if Lc is not None:
            par, octn = plan.parent[lvl - 3], plan.octant[lvl - 3]
            allo = (Lc @ l2l).reshape(-1, 8, K)[par]
            loc = loc + jnp.take_along_axis(allo, octn[:, None, None], axis=1)[:, 0]
        Lc = loc
        locs.append(loc)
    # 5. L2P
    lc = jnp.concatenate(locs)[plan.echunk_box]

    def l2p(x, c, h, lk):
        R = solid_harmonics((x - c[:, None, :]) / h[:, None, None], p, jnp)
        return jnp.einsum("bck,bk->bc", R, lk) / h[:, None]

    phi_far = _tiled(l2p, CHUNK_BLOCK, xe, ce, he, lc).reshape(-1)[plan.particle_eslot]
    # 6. P2P
    n_chunks = plan.slot_src.shape[0] // C
    valid = plan.slot_src < n
    src = jnp.minimum(plan.slot_src, n - 1)
    xs = positions[src].reshape(n_chunks, C, 3)  # empty slots: masked below
    qs = jnp.where(valid, charges[src], 0.0).reshape(n_chunks, C)
    vmask = valid.reshape(n_chunks, C)
    xcoord = [xs[:, :, a] for a in range(3)]  # (n_chunks, C) each: contiguous source rows
    lane = jnp.arange(C, dtype=plan.p2p_src.dtype)
    G = plan.p2p_src.shape[1]

    def p2p(t, s):
        # t (B,) target chunks, s (B, G) source chunks: dense C × (G·C) blocks
        B = t.shape[0]
        xt = xs[t]  # (B, C, 3)
        r2 = sum((xt[:, :, a, None] - xcoord[a][s].reshape(B, 1, G * C)) ** 2
                 for a in range(3))
        sid_s = (s[:, :, None] * C + lane).reshape(B, 1, G * C)  # global slot ids
        sid_t = (t[:, None] * C + lane)[:, :, None]
        mask = (sid_t != sid_s) & vmask[s].reshape(B, 1, G * C) & vmask[t][:, :, None]
        k = jnp.where(mask, kernel(jnp.where(mask, r2, 1.0)), 0.0)
        return jnp.einsum("bij,bj->bi", k, qs[s].reshape(B, G * C))

    near = _tiled(p2p, P2P_BLOCK, plan.p2p_tgt, plan.p2p_src)
    near = jax.ops.segment_sum(near, plan.p2p_tgt, n_chunks)
    out = phi_far + near.reshape(-1)[plan.particle_slot]
    if check:
        out = jnp.where(plan_is_valid(plan, positions), out, jnp.nan)
    return out
