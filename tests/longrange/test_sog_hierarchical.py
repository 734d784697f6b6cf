"""Hierarchical (pair list + dyadic grids) open-boundary SOG sum against the exact pair sum,
finite differences, invariances, continuity as atoms cross grid cells, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn.longrange.sog import sog_hierarchical, sog_needs_replan, sog_open, sog_plan

jax.config.update("jax_enable_x64", True)

WIDTHS = np.array([1.0, 1.7, 2.9, 4.5, 7.0, 12.0])
WEIGHTS = np.array([0.9, -0.4, 0.6, 0.3, 0.5, 0.2])


def system(n=240, seed=0, density=0.1):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, (n / density) ** (1 / 3), (n, 3))
    q = rng.normal(size=n)
    return pos, q - q.mean()


def hier(pos, q, method="auto", tol=1e-6, widths=WIDTHS, mask=None):
    mask = np.ones(len(pos), bool) if mask is None else mask
    plan = sog_plan(pos, widths, tol=tol, method=method, mask=mask)
    f = jax.jit(jax.value_and_grad(sog_hierarchical, argnums=(1, 4, 5)))
    return plan, f(plan, jnp.asarray(pos), jnp.asarray(q), jnp.asarray(mask), jnp.asarray(WEIGHTS), jnp.asarray(widths))


def scales(pos, q):
    """½ Σ_l |w_l| Σ_ij |q_i q_j| e^{-r²/s_l²} (the size the kernel errors, ≤ tol each, add
    up to) and its gradients in |w_l| and s_l (the same for the weight and width gradients)."""
    m = jnp.ones(len(pos), bool)
    f = jax.value_and_grad(sog_open, argnums=(3, 4))
    e, (gw, gs) = f(jnp.asarray(pos), jnp.abs(jnp.asarray(q)), m, jnp.abs(jnp.asarray(WEIGHTS)), jnp.asarray(WIDTHS))
    return float(e), np.asarray(gw), np.abs(np.asarray(gs))


def scale(pos, q):
    return scales(pos, q)[0]


def exact(pos, q, widths=WIDTHS, mask=None):
    mask = np.ones(len(pos), bool) if mask is None else mask
    f = jax.value_and_grad(sog_open, argnums=(0, 3, 4))
    return f(jnp.asarray(pos), jnp.asarray(q), jnp.asarray(mask), jnp.asarray(WEIGHTS), jnp.asarray(widths))


@pytest.mark.parametrize("method", ["grid", "auto", "direct"])
def test_matches_exact_pair_sum(method):
    pos, q = system()
    plan, (e, (g, gw, gs)) = hier(pos, q, method)
    e0, (g0, gw0, gs0) = exact(pos, q)
    if method == "grid":
        assert not plan.direct and len(plan.levels) >= 3  # a real hierarchy: 1 … 12 Å
    if method == "direct":
        assert not plan.levels
    sc, sw, ss = scales(pos, q)
    assert abs(float(e - e0)) <= 1e-6 * sc
    assert float(jnp.max(jnp.abs(g - g0))) <= 1e-5 * float(jnp.max(jnp.abs(g0)))
    assert np.all(np.abs(np.asarray(gw - gw0)) <= 2e-6 * sw)
    assert np.all(np.abs(np.asarray(gs - gs0)) <= 2e-6 * ss)


def test_accuracy_follows_tol():
    pos, q = system(seed=1)
    e0, sc = float(exact(pos, q)[0]), scale(pos, q)
    errs = [abs(float(hier(pos, q, "grid", tol)[1][0]) - e0) / sc for tol in (1e-4, 1e-6, 1e-9)]
    assert errs[0] > errs[2] and errs[2] < 1e-9 and errs[1] < 1e-6


def test_padding_atoms_do_not_contribute():
    pos, q = system(n=150, seed=2)
    pad = np.concatenate([pos, np.zeros((10, 3))])
    qp = np.concatenate([q, np.full(10, 5.0)])
    mask = np.arange(160) < 150
    e = float(hier(pad, qp, "grid", mask=mask)[1][0])
    assert e == pytest.approx(float(exact(pos, q)[0]), rel=1e-6)


def test_forces_match_finite_differences():
    pos, q = system(n=120, seed=3)
    plan = sog_plan(pos, WIDTHS, tol=1e-10, method="grid")  # grid everywhere: the approximate path
    w, s, m = jnp.asarray(WEIGHTS), jnp.asarray(WIDTHS), jnp.ones(len(pos), bool)
    f = jax.jit(lambda p: sog_hierarchical(plan, p, jnp.asarray(q), m, w, s))
    g = np.asarray(jax.grad(f)(jnp.asarray(pos)))
    eps = 1e-4
    for i, k in [(0, 0), (17, 1), (64, 2), (119, 0)]:
        dp = np.zeros_like(pos)
        dp[i, k] = eps
        fd = (float(f(jnp.asarray(pos + dp))) - float(f(jnp.asarray(pos - dp)))) / (2 * eps)
        assert g[i, k] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_invariances():
    pos, q = system(n=200, seed=4)
    e, sc = float(hier(pos, q, "grid")[1][0]), scale(pos, q)
    rot, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    perm = np.random.default_rng(6).permutation(len(pos))
    for p2, q2 in ((pos + np.array([3.3, -7.1, 0.37]), q), (pos @ rot.T, q), (pos[perm], q[perm])):
        assert float(hier(p2, q2, "grid")[1][0]) == pytest.approx(e, abs=2e-6 * sc)


def test_force_continuous_as_an_atom_crosses_grid_cells():
    """The spreading stencil follows the nearest grid point; when an atom crosses the
    half-way plane between grid points, its stencil shifts.  The force jump there is of the
    order of tol (the Gaussian's size at the dropped points), not of the force."""
    pos, q = system(n=100, seed=7)
    plan = sog_plan(pos, WIDTHS, method="grid")
    lv = plan.levels[0]
    w, s, m = jnp.asarray(WEIGHTS), jnp.asarray(WIDTHS), jnp.ones(len(pos), bool)
    grad = jax.jit(jax.grad(lambda p: sog_hierarchical(plan, p, jnp.asarray(q), m, w, s)))
    x_mid = lv.origin[0] + (np.floor((pos[5, 0] - lv.origin[0]) / lv.h) + 0.5) * lv.h  # a rounding plane
    jumps, scale = [], float(jnp.max(jnp.abs(grad(jnp.asarray(pos)))))
    for dx in (-1e-9, 1e-9):
        p = pos.copy()
        p[5, 0] = x_mid + dx
        jumps.append(np.asarray(grad(jnp.asarray(p))))
    jump = float(np.max(np.abs(jumps[1] - jumps[0])))
    assert jump < 1e-5 * scale


def test_replan_and_bad_input():
    pos, q = system(n=80, seed=8)
    plan = sog_plan(pos, WIDTHS, skin=0.4)
    assert not sog_needs_replan(plan, pos + 0.1, WIDTHS)
    assert sog_needs_replan(plan, pos + np.array([0.3, 0.0, 0.0]), WIDTHS)
    assert sog_needs_replan(plan, pos, WIDTHS * 1.01)
    with pytest.raises(ValueError, match="widths differ"):
        sog_hierarchical(plan, jnp.asarray(pos), jnp.asarray(q), jnp.ones(80, bool), jnp.asarray(WEIGHTS),
                         jnp.asarray(WIDTHS * 1.01))
    with pytest.raises(ValueError, match="plan is for 80 atoms"):
        sog_hierarchical(plan, jnp.asarray(pos[:70]), jnp.asarray(q[:70]), jnp.ones(70, bool),
                         jnp.asarray(WEIGHTS), jnp.asarray(WIDTHS))
    with pytest.raises(ValueError, match="widths must be positive"):
        sog_plan(pos, [1.0, -2.0])
    with pytest.raises(ValueError, match="finite"):
        sog_plan(np.full((4, 3), np.nan), WIDTHS)
    with pytest.raises(ValueError, match="unknown method"):
        sog_plan(pos, WIDTHS, method="fft")


def test_potential_uses_sog_plan_and_matches_exact_model():
    from lrnn.md import untrained_potential
    from lrnn.models import model_config

    model = {"rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8], "axis_neurons": 2, "fit": [8],
             "long_range": [{"type": "sog", "n_gaussians": 4, "s_min": 1.5, "s_max": 9.0, "fit": [4]}]}
    pos, _ = system(n=400, seed=9, density=0.05)
    species = np.where(np.arange(400) % 3 == 0, 8, 1)
    exact = untrained_potential([1, 8], model, seed=3, dtype="float64", output_scale=0.1)
    hmodel = dict(model, fmm_min_atoms=300, long_range=[dict(model["long_range"][0], method="hierarchical")])
    fast = untrained_potential([1, 8], hmodel, seed=3, dtype="float64", output_scale=0.1)
    r0, r1 = exact.calculate(pos, species), fast.calculate(pos, species)
    plan = fast.sog_plan
    assert plan is not None and plan.levels and exact.sog_plan is None
    assert r1["energy"] == pytest.approx(r0["energy"], abs=1e-6 * max(1.0, abs(r0["energy"])))
    assert np.max(np.abs(r1["forces"] - r0["forces"])) <= 1e-5 * np.max(np.abs(r0["forces"]))
    fast.calculate(pos + 0.01, species)
    assert fast.sog_plan is plan  # small moves keep the plan
    # below fmm_min_atoms: the exact sum (133 H + 67 O: an odd electron count, so the charge is given)
    replans = fast.sog_replans
    fast.calculate(pos[:200], species[:200], total_charge=0.0)
    assert fast.sog_plan is None and fast.sog_replans == replans
    with pytest.raises(ValueError, match="at most one sog term"):
        model_config(dict(hmodel, type="deeppot_se", type_map=[1, 8],
                          long_range=[hmodel["long_range"][0], hmodel["long_range"][0]]))


def test_nve_with_hierarchical_sog_through_ase_conserves_energy_across_replans():
    from ase import Atoms
    from ase import units as u
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from lrnn.ase_calculator import LrnnCalculator
    from lrnn.md import untrained_potential

    pos, _ = system(n=500, seed=10, density=0.05)
    keep = [0]
    for i in range(1, len(pos)):  # no contacts closer than 1.5 Å
        if np.min(np.linalg.norm(pos[keep] - pos[i], axis=1)) > 1.5:
            keep.append(i)
    pos = pos[keep]
    species = np.where(np.arange(len(pos)) % 3 == 0, 8, 1)
    model = {"rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8], "axis_neurons": 2, "fit": [8], "fmm_min_atoms": 100,
             "long_range": [{"type": "sog", "n_gaussians": 4, "s_min": 1.5, "s_max": 9.0, "fit": [4],
                             "method": "hierarchical"}]}
    pot = untrained_potential([1, 8], model, seed=3, dtype="float64", output_scale=0.05, term_scale=1.0)
    atoms = Atoms(numbers=species, positions=pos)
    atoms.calc = LrnnCalculator(pot)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(11))
    dyn = VelocityVerlet(atoms, timestep=0.5 * u.fs)
    etot, epot = [], []
    for _ in range(40):
        dyn.run(1)
        epot.append(atoms.get_potential_energy())
        etot.append(epot[-1] + atoms.get_kinetic_energy())
    assert pot.sog_plan is not None and pot.sog_replans >= 2  # atoms moved past half the skin
    etot, epot = np.array(etot), np.array(epot)
    assert np.ptp(etot) < 2e-3 * np.ptp(epot)


def test_spreading_in_chunks_equals_one_pass(monkeypatch):
    """The spread density and its pullback (positions, charges) with the atoms spread 7 at a
    time (a padded last chunk) equal those of one pass over all atoms (the default here)."""
    from lrnn.longrange import sog

    pos, q = system(n=60)
    level = sog_plan(pos, WIDTHS, method="grid").levels[0]
    cot = np.random.default_rng(1).normal(size=level.shape)

    def spread_and_pullback():
        rho, vjp = jax.vjp(lambda x, c: sog._spread(level, x, c), jnp.asarray(pos), jnp.asarray(q))
        return (rho,) + vjp(jnp.asarray(cot))

    one = spread_and_pullback()
    monkeypatch.setattr(sog, "SPREAD_CHUNK_BYTES", 7 * (2 * level.restrict_taps + 1) ** 3 * 8)
    for a, b in zip(spread_and_pullback(), one):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12 * np.abs(np.asarray(b)).max())
