"""FMM accuracy, gradients, invariances, cross-checks and bad input (float64: conftest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrnn.fmm as F
from lrnn.fmm import harmonics as H
from lrnn.fmm.distributions import plummer, random_charges, uniform_cube

N_ACC = 8000


def rel_rms(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def direct_field(x, q):
    """Analytic φ and E = -∇φ (NumPy, row blocks)."""
    phi = np.zeros(len(x))
    E = np.zeros_like(x)
    for s in range(0, len(x), 500):
        d = x[s:s + 500, None, :] - x[None, :, :]
        r2 = (d * d).sum(-1)
        np.fill_diagonal(r2[:, s:s + 500], np.inf)
        inv = 1 / np.sqrt(r2)
        phi[s:s + 500] = inv @ q
        E[s:s + 500] = np.einsum("ij,ijk->ik", inv**3 * q[None, :], d)
    return phi, E


@pytest.fixture(scope="module")
def sets():
    out = {}
    for name, x in [("uniform", uniform_cube(N_ACC, seed=1)), ("plummer", plummer(N_ACC, seed=2))]:
        q = random_charges(N_ACC, seed=3)
        out[name] = (x, q, direct_field(x, q))
    return out


def test_addition_theorem_and_operators():
    rng = np.random.default_rng(0)
    y = rng.uniform(-0.5, 0.5, (20, 3))
    x = rng.normal(size=(20, 3))
    x = 3 * x / np.linalg.norm(x, axis=1, keepdims=True)
    exact = 1 / np.linalg.norm(x - y, axis=1)
    approx = (H.solid_harmonics(y, 24) * H.irregular_harmonics(x, 24)).sum(-1)
    assert np.abs(approx - exact).max() < 1e-13
    # harmonic: Laplacian of every regular solid harmonic vanishes (JAX autodiff)
    lap = jax.vmap(lambda r: jnp.trace(jax.hessian(lambda s: H.solid_harmonics(s, 6, jnp))(r),
                                       axis1=1, axis2=2))(jnp.asarray(y[:3]))
    assert np.abs(np.asarray(lap)).max() < 1e-10
    # M2M and L2L are exact re-expansions
    ops = H.operators(6)
    q = rng.normal(size=20)
    for o in (0, 3, 7):
        d = H._octant_delta(o)
        yc = rng.uniform(-0.5, 0.5, (20, 3)) + d
        mc = (q[:, None] * H.solid_harmonics(yc - d, 6)).sum(0)
        mp = (q[:, None] * H.solid_harmonics(yc / 2, 6)).sum(0)
        assert np.abs(ops["m2m"][o] @ mc - mp).max() < 1e-10
        lp = rng.normal(size=H.n_coeffs(6))
        xc = rng.uniform(-0.5, 0.5, (10, 3))
        v1 = 0.5 * H.solid_harmonics((xc + d) / 2, 6) @ lp
        v2 = H.solid_harmonics(xc, 6) @ (ops["l2l"][o] @ lp)
        assert np.abs(v1 - v2).max() < 1e-12


def test_direct_matches_numpy(sets):
    x, q, (phi, _) = sets["uniform"]
    got = F.direct_potential(x[:1500], q[:1500])
    ref, _ = direct_field(x[:1500], q[:1500])
    assert rel_rms(got, ref) < 1e-13


@pytest.mark.parametrize("dist", ["uniform", "plummer"])
@pytest.mark.parametrize("order,tol", [(F.MIN_ORDER, 1e-3), (F.MAX_ORDER, 1e-6)])
def test_accuracy(sets, dist, order, tol):
    x, q, (phi, _) = sets[dist]
    # depth 3 at least, so that M2M/L2L and several M2L levels are exercised
    pl = F.plan(x, order=order, depth=None if dist == "plummer" else 3)
    got = F.potential_with_plan(pl, x, q)
    err = rel_rms(got, phi)
    print(dist, order, pl.summary(), err)
    assert err < tol


def test_forces_and_charge_gradient(sets):
    x, q, (phi, E) = sets["plummer"]
    x, q = x[:4000], q[:4000]
    phi, E = direct_field(x, q)
    for order, tol in [(F.MIN_ORDER, 1e-3), (F.MAX_ORDER, 1e-6)]:
        pl = F.plan(x, order=order, depth=2)
        energy = jax.jit(lambda x, q, pl=pl: F.laplace_energy(x, q, plan=pl, method="fmm"))
        gx, gq = jax.grad(energy, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(q))
        forces = -np.asarray(gx)
        assert rel_rms(forces, q[:, None] * E) < tol
        assert rel_rms(gq, phi) < tol
        if order == F.MAX_ORDER:
            assert not np.isnan(forces).any()


def test_fmm3dpy_cross_check(sets):
    fmm3dpy = pytest.importorskip("fmm3dpy")
    x, q, _ = sets["uniform"]
    out = fmm3dpy.lfmm3d(eps=1e-9, sources=np.asfortranarray(x.T), charges=q, pg=1)
    ref = 4 * np.pi * out.pot  # fmm3dpy's kernel is 1/(4πr)
    pl = F.plan(x, order=F.MAX_ORDER, depth=3)
    got = F.potential_with_plan(pl, x, q)
    assert rel_rms(got, ref) < 1e-6
    pl = F.plan(x, order=F.MIN_ORDER)
    assert rel_rms(F.potential_with_plan(pl, x, q), ref) < 1e-3


def test_public_api_dispatch_and_energy():
    x = uniform_cube(500, seed=5)
    q = random_charges(500, seed=5)
    phi_ref, _ = direct_field(x, q)
    phi = F.laplace_potential(x, q)  # small N: direct path
    assert rel_rms(phi, phi_ref) < 1e-13
    assert rel_rms(F.laplace_potential(x, q, method="fmm", order=10), phi_ref) < 1e-5
    e = F.laplace_energy(x, q, method="direct")
    assert abs(float(e) - 0.5 * q @ phi_ref) < 1e-12 * abs(0.5 * q @ phi_ref)
    # eager jax.grad without a plan: planned from the concrete primal values
    g = jax.grad(lambda x: F.laplace_energy(x, q, method="fmm", order=10))(jnp.asarray(x))
    assert g.shape == x.shape and np.all(np.isfinite(np.asarray(g)))


def test_invariance_translation_rotation():
    x = plummer(3000, seed=7)
    q = random_charges(3000, seed=7)
    kw = dict(method="fmm", order=10)
    e0 = float(F.laplace_energy(x, q, **kw))
    th = 0.7
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(1.1), -np.sin(1.1)], [0, np.sin(1.1), np.cos(1.1)]])
    # a moved or rotated set gets a different tree: invariant up to the FMM error
    # (relative RMS error of φ ~4e-6 at p = 10 on this set)
    for y in (x + np.array([3.3, -1.7, 12.9]), x @ rot.T, (x - 5.0) @ rot):
        assert abs(float(F.laplace_energy(y, q, **kw)) - e0) < 1e-5 * abs(e0)


def test_force_continuity_across_cell_boundary():
    x = uniform_cube(3000, seed=11)
    q = random_charges(3000, seed=11)
    pl = F.plan(x, order=10, depth=3)
    # move particle 0 along x across the nearest leaf boundary
    h = float(pl.leaf_side)
    lo = float(pl.root_lo[0])
    b = lo + h * np.round((x[0, 0] - lo) / h)
    grad = jax.grad(lambda y, p: F.laplace_energy(y, q, plan=p, method="fmm"))
    forces, leaves = [], []
    for s in (-1e-3, -2e-5, 2e-5, 1e-3):  # beyond the plan tolerance (1e-6)
        y = x.copy()
        y[0, 0] = b + s * h
        if F.needs_replan(pl, y):
            pl = F.plan(y, order=10, depth=3)
        leaves.append(float(pl.particle_box(0)[0][0]))
        f = -np.asarray(grad(jnp.asarray(y), pl))[0]
        phi, E = direct_field(y, q)
        # per-particle errors are measured against the RMS force of the set
        scale = np.sqrt(np.mean(np.sum((q[:, None] * E) ** 2, axis=1)))
        assert np.linalg.norm(f - q[0] * E[0]) < 1e-4 * scale
        forces.append(f)
    assert leaves[1] != leaves[2]  # it did change leaf
    jump = np.linalg.norm(forces[2] - forces[1]) / scale
    assert jump < 1e-4  # continuous up to the FMM error (the exact force changes by ~1e-6)


def test_vmap_over_charges_and_positions():
    x = uniform_cube(2000, seed=13)
    qs = np.stack([random_charges(2000, seed=s) for s in range(3)])
    pl = F.plan(x, order=8, depth=3)
    f = jax.jit(jax.vmap(lambda q: F.potential_with_plan(pl, x, q)))
    out = np.asarray(f(jnp.asarray(qs)))
    for i in range(3):
        assert rel_rms(out[i], direct_field(x, qs[i])[0]) < 1e-4
    # positions: small perturbations that keep every particle in its leaf share the plan
    xs = np.stack([x, x + 1e-9])
    g = jax.vmap(lambda y: F.laplace_energy(y, qs[0], plan=pl, method="fmm"))
    e = np.asarray(g(jnp.asarray(xs)))
    assert abs(e[0] - e[1]) < 1e-8 * abs(e[0])
    # vmap over positions without a plan: clear error
    with pytest.raises(ValueError, match="plan"):
        jax.vmap(lambda y: F.laplace_energy(y, qs[0], method="fmm"))(jnp.asarray(xs))


def test_bad_inputs():
    x = uniform_cube(100)
    q = random_charges(100)
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        F.laplace_potential(bad, q)
    with pytest.raises(ValueError, match="NaN"):
        F.plan(bad)
    with pytest.raises(ValueError, match="at least 2"):
        F.laplace_potential(x[:1], q[:1])
    with pytest.raises(ValueError, match="at least 2"):
        F.plan(x[:1])
    with pytest.raises(ValueError, match="charges"):
        F.laplace_potential(x, q[:50])
    with pytest.raises(ValueError, match="order"):
        F.plan(x, order=F.MAX_ORDER + 1)
    with pytest.raises(ValueError, match="jit"):
        jax.jit(lambda y: F.laplace_potential(y, q, method="fmm"))(x)


def test_stale_plan_replans_or_nan():
    x = uniform_cube(1000, seed=17)
    q = random_charges(1000, seed=17)
    pl = F.plan(x, order=6, depth=3)
    y = x.copy()
    y[0] = 1.0 - y[0]  # particle 0 jumps to another leaf
    assert not F.needs_replan(pl, x)
    assert F.needs_replan(pl, y)
    ref, _ = direct_field(y, q)
    # eager: automatic re-plan, correct answer
    assert rel_rms(F.laplace_potential(y, q, plan=pl, method="fmm"), ref) < 1e-4
    # under jit the stale plan cannot be fixed: NaN, never a silently wrong number
    out = jax.jit(lambda y: F.potential_with_plan(pl, y, q))(y)
    assert np.isnan(np.asarray(out)).all()
    with pytest.raises(ValueError, match="plan is for"):
        F.laplace_potential(x[:999], q[:999], plan=pl, method="fmm")


def test_near_kernel_plugin():
    """A kernel equal to 1/r beyond the leaf side gives Σ q_j k(r²) exactly."""
    x = uniform_cube(3000, seed=19)
    q = random_charges(3000, seed=19)
    rc = 0.05

    def kern(r2):
        r = jnp.sqrt(r2)
        fc = jnp.where(r < rc, 0.5 * (1 + jnp.cos(jnp.pi * r / rc)), 0.0)
        return (1 - fc) / r

    pl = F.plan(x, order=10, min_leaf_side=rc)
    assert float(pl.leaf_side) >= rc
    got = F.potential_with_plan(pl, x, q, near_kernel=kern)
    ref = F.direct_potential(x, q, kernel=kern)
    assert rel_rms(got, ref) < 1e-5


def _multiscale_set(seed=23):
    """A dense 2000-particle ball (radius 1e-3) in a corner of a sparse 1000-particle cube:
    leaves at many levels, coarse halo leaves touching finely split boxes."""
    rng = np.random.default_rng(seed)
    core = 0.05 + 1e-3 * rng.normal(size=(2000, 3))
    halo = rng.uniform(0, 1, (1000, 3))
    return np.concatenate([core, halo]), random_charges(3000, seed=seed)


def test_adaptive_tree_is_balanced_and_counts_every_pair_once():
    from lrnn.fmm.tree import _FINE, _Tree, morton

    x, q = _multiscale_set()
    lo, size = x.min(0), float(np.ptp(x, 0).max()) * 1.001
    fijk = np.floor((x - lo) / size * (1 << _FINE)).astype(np.int64)
    k = morton(fijk)
    o = np.argsort(k)
    tree = _Tree(k[o], fijk[o], _FINE)
    tree.grow(_FINE, 32)
    tree.balance()
    levels = sorted(tree.keys)
    assert levels[-1] - levels[0] >= 6  # genuinely multi-level
    # 2:1 balance: no leaf touches a leaf two or more levels finer
    for la in levels:
        leaves_a = tree.coords[la][tree.leaf[la]]
        for lb in levels:
            if lb < la + 2:
                continue
            # a finer leaf b touches a iff its ancestor at level la+1 is one of a's 56 outer
            # neighbours at that level; those must not exist as nodes that hold b
            anc = tree.coords[lb][tree.leaf[lb]] >> (lb - la - 1)
            cand = (leaves_a[:, None, :] << 1) + np.array(
                [(i, j, m) for i in range(-1, 3) for j in range(-1, 3) for m in range(-1, 3)])
            keys = np.unique(morton(anc))
            hit = np.isin(morton(np.clip(cand, 0, None)), keys) & np.all(cand >= 0, -1)
            assert not hit.any(), (la, lb)
    # every pair once: the FMM with charges 1 and the 1/r kernel matches the direct sum
    pl = F.plan(x, order=10, max_leaf=32)
    assert int(pl.n_virtual) > 0 and pl.depth >= 8
    ref, E = direct_field(x, q)
    assert rel_rms(F.potential_with_plan(pl, x, q), ref) < 1e-5
    ones = np.ones(len(x))
    ref1, _ = direct_field(x, ones)
    assert rel_rms(F.potential_with_plan(pl, x, ones), ref1) < 1e-5
    f = -np.asarray(jax.grad(lambda y: 0.5 * jnp.sum(q * F.potential_with_plan(pl, y, q)))(
        jnp.asarray(x)))
    assert rel_rms(f, q[:, None] * E) < 1e-4


def test_adaptive_cost_follows_the_particles_not_the_box():
    """A Plummer sphere and a uniform cube of the same N get comparable plans (box counts
    within a small factor), although the Plummer core is ~1e4× denser than its halo."""
    u = F.plan(uniform_cube(20000, seed=1), order=5).summary()
    p = F.plan(plummer(20000, seed=1), order=5).summary()
    assert p["depth"] > u["depth"] + 2
    assert p["n_chunks"] < 2 * u["n_chunks"] and p["n_m2l_pairs"] < 5 * u["n_m2l_pairs"]


def test_m2l_tiles_hold_one_offset_each_and_every_pair_once():
    """Each M2L tile is one GEMM against one translation operator: every real pair in a
    tile has the tile's offset (source centre − target centre, in box sides, same level),
    no (target, source) pair occurs twice, and no pair touches."""
    pl = F.plan(plummer(6000, seed=3), order=5)
    dummy = len(pl.box_level) - 1
    tgt, src, op = (np.asarray(a) for a in (pl.m2l_tgt, pl.m2l_src, pl.m2l_op))
    real = src != dummy
    assert np.array_equal(real, tgt != dummy) and real.sum() == pl.summary()["n_m2l_pairs"]
    t, s = tgt[real], src[real]
    d = np.broadcast_to(op[:, None], tgt.shape)[real]
    lvl = np.asarray(pl.box_level)
    assert np.array_equal(lvl[t], lvl[s])
    c = np.asarray(pl.box_center)
    off = (c[s] - c[t]) / np.asarray(pl.box_side(t))[:, None]
    np.testing.assert_allclose(off, H.M2L_OFFSETS[d], atol=1e-9)
    assert len(np.unique(t * (dummy + 1) + s)) == len(t)
    assert np.abs(H.M2L_OFFSETS).max(1).min() == 2  # so every pair is well separated
