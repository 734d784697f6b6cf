r"""Real solid harmonics and the FMM translation operators.

Basis
-----
For degree ``n`` and order ``m`` (``-n <= m <= n``) the flat index is
``k = n*n + n + m`` and ``K = (p+1)**2`` coefficients describe an expansion of order ``p``.

The complex regular solid harmonics are

.. math:: R_n^m(\mathbf r) = \frac{r^n P_n^m(\cos\theta)\, e^{i m \varphi}}{(n+m)!}

(Condon--Shortley phase in :math:`P_n^m`).  They obey the Cartesian recurrences
(Helgaker, Jørgensen & Olsen, *Molecular Electronic-Structure Theory*, §6.4)

.. math::
    R_0^0 = 1,\qquad R_n^n = -\frac{x + i y}{2n} R_{n-1}^{n-1},\qquad
    R_n^m = \frac{(2n-1) z R_{n-1}^m - r^2 R_{n-2}^m}{(n-m)(n+m)},

which need no trigonometric functions and are differentiable everywhere (they are
polynomials).  We use the *real*, Schmidt-normalised regular harmonics

.. math::
    \hat R_{n,m} = s_{nm} \operatorname{Re} R_n^m \;(m \ge 0),\qquad
    \hat R_{n,-m} = s_{nm} \operatorname{Im} R_n^m,\qquad
    s_{nm} = \sqrt{(2-\delta_{m0})(n-m)!(n+m)!},

and the irregular ones by the Kelvin transform :math:`\hat I_k(\mathbf r) =
\hat R_k(\mathbf r)/r^{2n+1}` (harmonic away from 0).  With this normalisation the
addition theorem (Legendre's) takes the symmetric form

.. math:: \frac{1}{|\mathbf x - \mathbf y|} = \sum_{n=0}^{\infty}\sum_{m=-n}^{n}
          \hat R_{n,m}(\mathbf y)\, \hat I_{n,m}(\mathbf x), \qquad |\mathbf y| < |\mathbf x|.

Expansions (box of side ``h`` centred at ``c``; tildes are box units, :math:`\tilde{\mathbf x} =
(\mathbf x - \mathbf c)/h`)
-----------------------------------------------------------------------------------------
* multipole: :math:`\phi(\mathbf x) = h^{-1} \sum_k M_k \hat I_k(\tilde{\mathbf x})`, valid
  outside the sphere holding the sources;
* local: :math:`\phi(\mathbf x) = h^{-1} \sum_k L_k \hat R_k(\tilde{\mathbf x})`, valid inside
  the sphere free of sources.

Operators
---------
* **P2M**: :math:`M_k = \sum_j q_j \hat R_k(\tilde{\mathbf y}_j)` (the addition theorem above).
* **M2M** (child, side ``h``, centre offset :math:`\boldsymbol\delta h` from the parent, side
  ``2h``): :math:`M^{\rm parent} = A_o M^{\rm child}` with :math:`A_o` the exact, finite map
  of the child's basis functions :math:`\hat I_k(\tilde{\mathbf x} - \boldsymbol\delta)` onto
  the parent's basis :math:`\tfrac12 \hat I_j(\tilde{\mathbf x}/2)` (degree :math:`\le p`
  only depends on degree :math:`\le p`, so truncation adds no error).
* **M2L** (same level, source centre at integer offset ``d`` box sides from the target,
  ``max|d_i| >= 2``): :math:`L = T_d M` with :math:`T_d` the Taylor coefficients of
  :math:`\hat I_k(\tilde{\mathbf x} - \mathbf d)` in the regular basis, truncated at
  degree ``p`` (this and the truncation of ``M`` are the only approximations of the method).
* **L2L** (parent to child): :math:`L^{\rm child} = B_o L^{\rm parent}`, exact re-expansion of
  the polynomial :math:`\tfrac12 \hat R_k((\tilde{\mathbf x} + \boldsymbol\delta)/2)`.
* **L2P**: :math:`\phi_i \mathrel{+}= h^{-1} \sum_k L_k \hat R_k(\tilde{\mathbf x}_i)`.

Rather than coding the (convention-laden) closed-form translation theorems, the
matrices :math:`A_o, T_d, B_o` are obtained numerically, once per order, by projecting the
translated basis functions onto the target basis on a sphere with a product
Gauss--Legendre × trapezoid quadrature.  Solid harmonics of different (n, m) are
orthogonal on a sphere, so the projection returns exactly the expansion coefficients;
the quadrature is exact up to a degree far beyond ``p`` and the remaining aliasing of
higher degrees is below 1e-15 (checked in ``tests/fmm``).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

__all__ = ["n_coeffs", "solid_harmonics", "irregular_harmonics", "operators",
           "M2L_OFFSETS", "octant_m2l_offsets"]


def n_coeffs(order: int) -> int:
    return (order + 1) ** 2


@functools.lru_cache(maxsize=None)
def _norms(order: int) -> np.ndarray:
    s = np.zeros(n_coeffs(order))
    for n in range(order + 1):
        for m in range(-n, n + 1):
            am = abs(m)
            s[n * n + n + m] = math.sqrt((2 - (am == 0)) * math.factorial(n - am)
                                         * math.factorial(n + am))
    return s


def solid_harmonics(r, order: int, xp=np):
    """Real Schmidt-normalised regular solid harmonics :math:`\\hat R_k(\\mathbf r)`.

    ``r`` has shape ``(..., 3)``; returns ``(..., (order+1)**2)``.  ``xp`` is ``numpy`` or
    ``jax.numpy`` (the JAX version is jittable and differentiable).
    """
    if xp is not np:
        return _solid_harmonics_scan(r, order)
    x, y, z = r[..., 0:1], r[..., 1:2], r[..., 2:3]
    r2 = x * x + y * y + z * z
    one = xp.ones_like(x)
    # A[n], B[n]: real and imaginary parts of R_n^m for m = 0..n, shape (..., n+1);
    # one vectorised recurrence step per degree keeps the traced graph small.
    A, B = [one], [xp.zeros_like(x)]
    for n in range(1, order + 1):
        a1, b1 = A[n - 1], B[n - 1]
        sect_a = -(x * a1[..., -1:] - y * b1[..., -1:]) / (2 * n)
        sect_b = -(y * a1[..., -1:] + x * b1[..., -1:]) / (2 * n)
        sub_a, sub_b = z * a1[..., -1:], z * b1[..., -1:]
        if n >= 2:
            m = np.arange(n - 1)
            den = np.asarray(1.0 / ((n - m) * (n + m)))
            a2, b2 = A[n - 2], B[n - 2]
            lo_a = ((2 * n - 1) * z * a1[..., :-1] - r2 * a2) * den
            lo_b = ((2 * n - 1) * z * b1[..., :-1] - r2 * b2) * den
            A.append(xp.concatenate([lo_a, sub_a, sect_a], axis=-1))
            B.append(xp.concatenate([lo_b, sub_b, sect_b], axis=-1))
        else:
            A.append(xp.concatenate([sub_a, sect_a], axis=-1))
            B.append(xp.concatenate([sub_b, sect_b], axis=-1))
    out = []
    for n in range(order + 1):
        if n:
            out.append(B[n][..., :0:-1])  # m = -n .. -1  ->  Im R_n^{|m|}
        out.append(A[n])
    s = _norms(order)
    res = xp.concatenate(out, axis=-1)
    return res * xp.asarray(s, dtype=res.dtype)


@functools.lru_cache(maxsize=None)
def _scan_layout(order: int):
    """Flat gather index from the stacked [Re (n, m); Im (n, m)] arrays to the k layout."""
    P = order + 1
    idx = []
    for n in range(P):
        for m in range(-n, n + 1):
            idx.append(P * P + n * P - m if m < 0 else n * P + m)
    return np.asarray(idx)


def _solid_harmonics_scan(r, order: int):
    """JAX version: one :func:`jax.lax.scan` step per degree on (p+1)-wide padded vectors,
    which keeps the compiled graph (and its gradient) small for any order."""
    import jax
    import jax.numpy as jnp

    P = order + 1
    x, y, z = r[..., 0:1], r[..., 1:2], r[..., 2:3]
    r2 = x * x + y * y + z * z
    m = jnp.arange(P, dtype=r.dtype)
    shape = r.shape[:-1] + (P,)
    a0 = jnp.zeros(shape, r.dtype).at[..., 0].set(1.0)
    zero = jnp.zeros(shape, r.dtype)

    def step(carry, n):
        a1, b1, a2, b2 = carry
        sel = (m == n - 1).astype(r.dtype)
        a_last = jnp.sum(a1 * sel, axis=-1, keepdims=True)
        b_last = jnp.sum(b1 * sel, axis=-1, keepdims=True)
        den = jnp.where(m <= n - 2, 1.0 / jnp.maximum((n - m) * (n + m), 1.0), 0.0)
        is_sect = (m == n).astype(r.dtype)
        a = (((2 * n - 1) * z * a1 - r2 * a2) * den + sel * z * a_last
             - is_sect * (x * a_last - y * b_last) / (2 * n))
        b = (((2 * n - 1) * z * b1 - r2 * b2) * den + sel * z * b_last
             - is_sect * (y * a_last + x * b_last) / (2 * n))
        return (a, b, a1, b1), (a, b)

    ns = jnp.arange(1, P, dtype=r.dtype)
    _, (As, Bs) = jax.lax.scan(step, (a0, zero, zero, zero), ns)
    A = jnp.concatenate([a0[None], As], axis=0)  # (P, ..., P)
    B = jnp.concatenate([zero[None], Bs], axis=0)
    flat = jnp.concatenate([jnp.moveaxis(A, 0, -2), jnp.moveaxis(B, 0, -2)], axis=-2)
    flat = flat.reshape(r.shape[:-1] + (2 * P * P,))
    res = jnp.take(flat, jnp.asarray(_scan_layout(order)), axis=-1)
    return res * jnp.asarray(_norms(order), dtype=r.dtype)


def irregular_harmonics(r, order: int):
    """NumPy :math:`\\hat I_k(\\mathbf r) = \\hat R_k(\\mathbf r)/r^{2n+1}`."""
    R = solid_harmonics(r, order, np)
    rr = np.linalg.norm(r, axis=-1)[..., None]
    deg = np.concatenate([np.full(2 * n + 1, n) for n in range(order + 1)])
    return R / rr ** (2 * deg + 1)


def _degrees(order):
    return np.concatenate([np.full(2 * n + 1, n) for n in range(order + 1)])


def _sphere(n_theta: int, n_phi: int, radius: float):
    t, wt = np.polynomial.legendre.leggauss(n_theta)
    ph = 2 * np.pi * np.arange(n_phi) / n_phi
    st = np.sqrt(1 - t * t)
    pts = np.stack([np.outer(st, np.cos(ph)), np.outer(st, np.sin(ph)),
                    np.outer(t, np.ones_like(ph))], axis=-1).reshape(-1, 3)
    w = np.outer(wt, np.full(n_phi, 2 * np.pi / n_phi)).reshape(-1)
    return radius * pts, w


def _octant_delta(o: int) -> np.ndarray:
    """Child-centre offset from its parent's centre, in child box sides (±0.5)."""
    return np.array([(o >> 0) & 1, (o >> 1) & 1, (o >> 2) & 1], dtype=float) - 0.5


def _m2l_offsets():
    rng = range(-3, 4)
    return np.array([(i, j, k) for i in rng for j in rng for k in rng
                     if max(abs(i), abs(j), abs(k)) >= 2], dtype=np.int64)


#: The 316 same-level offsets (in box sides) that can occur in an M2L interaction list.
M2L_OFFSETS = _m2l_offsets()


@functools.lru_cache(maxsize=None)
def octant_m2l_offsets():
    """For each child octant ``o`` (0..7) the 189 offsets of its interaction list.

    The interaction list of a box is the set of children of its parent's neighbours
    (including the parent) that are not neighbours of the box itself.  Returns
    ``(8, 189)`` indices into :data:`M2L_OFFSETS`.
    """
    lookup = {tuple(d): i for i, d in enumerate(M2L_OFFSETS)}
    out = []
    for o in range(8):
        b = np.array([(o >> 0) & 1, (o >> 1) & 1, (o >> 2) & 1])
        idx = []
        for d in M2L_OFFSETS:
            # neighbour parent of the target's parent: floor((b + d)/2) in {-1,0,1}
            pd = np.floor_divide(b + d, 2)
            if np.all(np.abs(pd) <= 1):
                idx.append(lookup[tuple(d)])
        assert len(idx) == 189, len(idx)
        out.append(idx)
    return np.array(out, dtype=np.int64)


_CACHE_VERSION = 2


@functools.lru_cache(maxsize=None)
def operators(order: int):
    """Cached :func:`build_operators` (memory, and on disk under ``$LRNN_CACHE`` or
    ``~/.cache/lrnn``; delete the files to rebuild)."""
    root = os.environ.get("LRNN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lrnn"))
    path = os.path.join(root, f"fmm_ops_p{order}_v{_CACHE_VERSION}.npz")
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except Exception:  # noqa: BLE001 - missing or unreadable cache: rebuild
        pass
    ops = build_operators(order)
    try:
        os.makedirs(root, exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, **ops)
        os.replace(tmp, path)
    except OSError:
        pass
    return ops


def build_operators(order: int):
    """Translation matrices for expansions of ``order`` (float64 NumPy, cached).

    Returns a dict with
    ``m2m`` (8, K, K): ``M_parent = m2m[o] @ M_child`` for a child in octant ``o``;
    ``l2l`` (8, K, K): ``L_child = l2l[o] @ L_parent``;
    ``m2l`` (316, K, K): ``L_target = m2l[d] @ M_source`` for a source at offset
    ``M2L_OFFSETS[d]`` (in box sides) from the target, the same at every level.
    """
    p = order
    K = n_coeffs(p)
    nt = p + 12
    nph = 2 * p + 24

    def pinv_w(basis, w):
        # weighted least-squares projector (Aᵀ W A)⁻¹ Aᵀ W; Aᵀ W A is diagonal up to
        # rounding because the basis is orthogonal under the quadrature
        atw = basis.T * w[None, :]
        g = atw @ basis
        d = 1.0 / np.sqrt(np.diag(g))
        return (np.linalg.solve(g * d[:, None] * d[None, :], atw * d[:, None])) * d[:, None]

    # M2M: fit the child basis I_k(x - delta) on a sphere of radius 6 (child units) by the
    # parent basis 0.5 I_j(x/2); degree-n aliasing decays like (0.87/6)^n.
    pts, w = _sphere(nt, nph, 6.0)
    P = pinv_w(0.5 * irregular_harmonics(pts / 2.0, p), w)
    m2m = np.stack([P @ irregular_harmonics(pts - _octant_delta(o), p) for o in range(8)])
    # L2L: fit 0.5 R_k((x + delta)/2) by R_j(x) on the unit sphere (exact: polynomials)
    pts1, w1 = _sphere(nt, nph, 1.0)
    P = pinv_w(solid_harmonics(pts1, p), w1)
    l2l = np.stack([P @ (0.5 * solid_harmonics((pts1 + _octant_delta(o)) / 2.0, p))
                    for o in range(8)])
    # M2L: fit I_k(x - d) by R_j(x) on a sphere of radius 1/2 around the target centre;
    # |d| >= 2 so degree-n aliasing decays like 4^-n.
    pts2, w2 = _sphere(nt, nph, 0.5)
    P = pinv_w(solid_harmonics(pts2, p), w2)
    m2l = np.empty((len(M2L_OFFSETS), K, K))
    for c0 in range(0, len(M2L_OFFSETS), 32):
        ds = M2L_OFFSETS[c0:c0 + 32]
        vals = irregular_harmonics(pts2[None, :, :] - ds[:, None, :], p)
        nd = len(ds)
        out = P @ vals.transpose(1, 0, 2).reshape(vals.shape[1], nd * K)
        m2l[c0:c0 + nd] = out.reshape(K, nd, K).transpose(1, 0, 2)
    return {"m2m": m2m, "l2l": l2l, "m2l": m2l}
