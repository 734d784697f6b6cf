"""FMM evaluation of the model's long-range parts (latent Coulomb, far-field descriptor)
against the exact sums they replace, and the Potential's plan handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn import fmm
from lrnn.longrange.coulomb import FMM_LEAF_SIGMAS, coulomb_direct, coulomb_fmm
from lrnn.longrange.farfield import far_field_potentials, far_field_potentials_fmm
from lrnn.md import untrained_potential

N = 800


def cluster(n=N, seed=0, density=0.05):
    side = (n / density) ** (1 / 3)
    return np.random.default_rng(seed).uniform(0, side, (n, 3))


def test_coulomb_fmm_matches_direct_energy_and_forces():
    pos = cluster()
    q = np.random.default_rng(1).normal(size=N)
    q -= q.mean()
    sigma = 0.5
    plan = fmm.plan(pos, order=10, min_leaf_side=FMM_LEAF_SIGMAS * sigma)
    assert float(plan.leaf_side) >= FMM_LEAF_SIGMAS * sigma and plan.depth >= 2
    # padding rows after the real atoms are ignored (zero charge, masked)
    pos_p = jnp.asarray(np.vstack([pos, np.zeros((8, 3))]))
    q_p = jnp.asarray(np.r_[q, np.zeros(8)])
    mask = jnp.arange(N + 8) < N
    e_ref, g_ref = jax.value_and_grad(lambda p: coulomb_direct(p, q_p, mask, sigma=sigma))(pos_p)
    e, g = jax.jit(jax.value_and_grad(lambda p: coulomb_fmm(plan, p, q_p, mask, sigma=sigma)))(pos_p)
    # error relative to the energy scale 1/2 k sum |q_i phi_i| (the sum itself cancels strongly)
    phi = np.asarray(fmm.direct_potential(jnp.asarray(pos), jnp.asarray(q)))
    scale = 0.5 * 14.399645 * np.sum(np.abs(q * phi))
    assert abs(float(e) - float(e_ref)) <= 1e-6 * scale
    g, g_ref = np.asarray(g), np.asarray(g_ref)
    assert np.sqrt(np.mean((g - g_ref) ** 2) / np.mean(g_ref**2)) < 3e-5  # order 10
    assert np.all(g[N:] == 0)
    # charge derivative = potential, as for the exact sum
    dq = jax.grad(lambda c: coulomb_fmm(plan, pos_p, c, mask, sigma=sigma))(q_p)
    dq_ref = jax.grad(lambda c: coulomb_direct(pos_p, c, mask, sigma=sigma))(q_p)
    dq, dq_ref = np.asarray(dq)[:N], np.asarray(dq_ref)[:N]
    assert np.sqrt(np.mean((dq - dq_ref) ** 2) / np.mean(dq_ref**2)) < 1e-5


def test_far_field_fmm_matches_direct_and_is_smooth_in_the_plan():
    pos = cluster(seed=2)
    types = np.random.default_rng(3).integers(0, 2, N)
    r_on, r_off = 3.0, 4.5
    plan = fmm.plan(pos, order=10, min_leaf_side=r_off)
    ref = np.asarray(far_field_potentials(jnp.asarray(pos), jnp.asarray(types), 2, r_on, r_off))
    got = np.asarray(jax.jit(lambda p: far_field_potentials_fmm(plan, p, jnp.asarray(types), 2, r_on, r_off))(
        jnp.asarray(pos)))
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-6
    # an atom moving inside its leaf: the FMM feature changes exactly like the direct one
    dp = np.zeros_like(pos)
    dp[7, 0] = 1e-3
    got2 = np.asarray(far_field_potentials_fmm(plan, jnp.asarray(pos + dp), jnp.asarray(types), 2, r_on, r_off))
    ref2 = np.asarray(far_field_potentials(jnp.asarray(pos + dp), jnp.asarray(types), 2, r_on, r_off))
    np.testing.assert_allclose(got2 - got, ref2 - ref, atol=1e-7)


MODEL = {"rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8], "axis_neurons": 2, "fit": [8],
         "far_field": {"r_on": 3.0, "r_off": 4.5}, "long_range": [{"type": "latent_coulomb", "sigma": 0.5,
                                                                   "fit": [4]}]}


def _fmm_model(**kw):
    m = dict(MODEL, far_field=dict(MODEL["far_field"], method="fmm"), fmm_order=10, fmm_min_atoms=500, **kw)
    m["long_range"] = [dict(MODEL["long_range"][0], method="fmm")]
    return m


def test_potential_uses_fmm_plan_and_matches_exact_model():
    pos = cluster(seed=4)
    species = np.where(np.arange(N) % 3 == 0, 8, 1)  # 533 H: an odd electron count, so the charge is given
    exact = untrained_potential([1, 8], MODEL, seed=3, dtype="float64", output_scale=0.1)
    fast = untrained_potential([1, 8], _fmm_model(), seed=3, dtype="float64", output_scale=0.1)
    r0, r1 = exact.calculate(pos, species, total_charge=0.0), fast.calculate(pos, species, total_charge=0.0)
    assert fast.fmm_plan is not None and fast.fmm_replans == 1 and exact.fmm_plan is None
    assert r1["energy"] == pytest.approx(r0["energy"], rel=2e-5)
    df = r1["forces"] - r0["forces"]
    assert np.sqrt(np.mean(df**2) / np.mean(r0["forces"] ** 2)) < 1e-4
    # small moves keep the plan; moving an atom out of its leaf re-plans (never a NaN)
    fast.calculate(pos + 1e-4, species, total_charge=0.0)
    assert fast.fmm_replans == 1
    far = pos.copy()
    far[0] = pos.max(0) + 5.0
    e_far = fast.calculate(far, species, total_charge=0.0)["energy"]
    assert fast.fmm_replans == 2 and np.isfinite(e_far)
    assert e_far == pytest.approx(exact.calculate(far, species, total_charge=0.0)["energy"], rel=2e-5)
    # rotated and translated: the FMM model (new plan) keeps the energy to the FMM error
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    e_rot = fast.calculate(pos @ rot.T + [3.0, -7.0, 11.0], species, total_charge=0.0)["energy"]
    assert e_rot == pytest.approx(r0["energy"], rel=2e-5)
    # below fmm_min_atoms (or with no room for wide enough leaves) the exact sums are used
    small = untrained_potential([1, 8], _fmm_model(), seed=3, dtype="float64", output_scale=0.1)
    small.calculate(pos[:100], species[:100])
    assert small.fmm_plan is None


def test_fmm_and_open_descriptor_configuration_errors():
    from lrnn import models
    from lrnn.batch import make_inputs
    from lrnn.system import Dataset

    base = {"type": "deeppot_se", "type_map": [1, 8], "rcut": 4.0, "rcut_smth": 1.0}
    with pytest.raises(ValueError, match="needs sigma > 0"):
        models.model_config(dict(base, long_range=[{"type": "latent_coulomb", "method": "fmm", "sigma": 0.0}]))
    with pytest.raises(ValueError, match="far_field method"):
        models.model_config(dict(base, far_field={"r_on": 3.0, "r_off": 4.0, "method": "octree"}))
    with pytest.raises(ValueError, match="fmm_order"):
        models.model_config(dict(base, fmm_order=40))
    periodic = Dataset(np.array([[[0.0, 0, 0], [1.0, 0, 0]]]), [[1, 8]], [0.0], cell=[np.eye(3) * 9.0],
                       pbc=[[True] * 3])
    for extra in ({"far_field": {"r_on": 3.0, "r_off": 4.0}}, {"grid": {"spacing": 3.0, "n_cells": 4}},
                  {"long_range": [{"type": "latent_coulomb", "method": "fmm"}]}):
        _, mcfg = models.model_config(dict(base, **extra))
        with pytest.raises(ValueError, match="open boundaries"):
            make_inputs(periodic, mcfg)


def test_nve_with_fmm_terms_through_ase_conserves_energy_across_replans():
    """Velocity-Verlet (ASE) with the FMM-evaluated model: the plan is rebuilt as atoms
    leave their leaves and the total energy stays conserved."""
    from ase import Atoms
    from ase import units as u
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from lrnn.ase_calculator import LrnnCalculator

    rng = np.random.default_rng(9)
    pos = cluster(seed=5)
    keep = [0]
    for i in range(1, N):  # no contacts closer than 1.5 Å
        if np.min(np.linalg.norm(pos[keep] - pos[i], axis=1)) > 1.5:
            keep.append(i)
    pos = pos[keep]
    species = np.where(np.arange(len(pos)) % 3 == 0, 8, 1)
    pot = untrained_potential([1, 8], _fmm_model(), seed=3, dtype="float64", output_scale=0.05, term_scale=1.0)
    atoms = Atoms(numbers=species, positions=pos, info={"charge": 0})  # 409 H: odd electron count
    atoms.calc = LrnnCalculator(pot)
    MaxwellBoltzmannDistribution(atoms, temperature_K=800, rng=rng)
    dyn = VelocityVerlet(atoms, timestep=0.5 * u.fs)
    etot, epot = [], []
    for _ in range(30):
        dyn.run(1)
        epot.append(atoms.get_potential_energy())
        etot.append(epot[-1] + atoms.get_kinetic_energy())
    assert pot.fmm_plan is not None and pot.fmm_replans >= 2  # atoms left their leaves on the way
    etot, epot = np.array(etot), np.array(epot)
    assert np.ptp(etot) < 2e-3 * np.ptp(epot)  # measured 1e-4 (5.5 meV over 56 eV, 3 re-plans)
