"""Gaussian-smeared Coulomb sums against an explicit NumPy/SciPy double loop, charge
equilibration, and the latent-charge model term (invariance, forces, total charge)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from lrnn import models
from lrnn.batch import make_inputs
from lrnn.longrange.coulomb import coulomb_direct, coulomb_reciprocal, equilibrate, k_index_vectors
from lrnn.models.terms import LatentCoulombConfig
from lrnn.nn import split
from lrnn.potential import energy_forces_virial
from lrnn.system import Dataset
from lrnn.units import COULOMB_K


def reference(pos, q, sigma):
    e = 0.0
    for i in range(len(q)):
        for j in range(len(q)):
            if i != j:
                r = np.linalg.norm(pos[i] - pos[j])
                e += q[i] * q[j] * (erf(r / (2 * sigma)) if sigma > 0 else 1.0) / r
    return 0.5 * COULOMB_K * e


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_direct_sum_matches_double_loop(sigma):
    rng = np.random.default_rng(0)
    pos, q = rng.uniform(0, 6, (30, 3)), rng.normal(size=30)
    mask = np.ones(30, bool)
    mask[-3:] = False
    ref = reference(pos[:-3], q[:-3], sigma)
    assert float(coulomb_direct(jnp.asarray(pos), jnp.asarray(q), jnp.asarray(mask), sigma)) == pytest.approx(ref, rel=1e-12)
    blocked = coulomb_direct(jnp.asarray(pos), jnp.asarray(q), jnp.asarray(mask), sigma, block=8)
    assert float(blocked) == pytest.approx(ref, rel=1e-12)


def test_smeared_pair_is_smooth_at_zero():
    from lrnn.longrange.coulomb import smeared_pair

    r = jnp.array([0.0, 1e-6, 1e-3, 1e-2])
    v = smeared_pair(r, 0.5)
    assert np.all(np.isfinite(np.asarray(v)))
    np.testing.assert_allclose(np.asarray(v), erf(np.maximum(np.asarray(r), 1e-30) / 1.0) / np.maximum(np.asarray(r), 1e-30), rtol=1e-6)
    g = jax.grad(lambda x: smeared_pair(x, 0.5))(0.0)
    assert np.isfinite(float(g))


def test_equilibrate_total_charge():
    q = equilibrate(jnp.array([0.3, -0.1, 0.5, 9.0]), jnp.array([True, True, True, False]), 1.0)
    assert float(q.sum()) == pytest.approx(1.0)
    assert float(q[3]) == 0.0


CFG = {"type": "deeppot_se", "type_map": [11, 17], "rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8],
       "axis_neurons": 2, "fit": [8], "long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [8]}]}
STATS = {"s_avg": jnp.zeros(2), "s_std": jnp.ones(2) * 0.3, "dir_std": jnp.ones(2) * 0.3, "n_norm": 5.0}


def model_inputs(pos, num, total_charge=0.0):
    _, mcfg = models.model_config(CFG)
    ds = Dataset(pos[None], np.asarray(num)[None], [0.0], total_charge=[total_charge])
    inp, _ = make_inputs(ds, mcfg, dtype=np.float64)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), inp)


@pytest.fixture(scope="module")
def model():
    g, st = split(models.create(CFG, seed=3, dtype=jnp.float64))
    return g, st, jax.jit(energy_forces_virial, static_argnums=0)


def test_latent_coulomb_invariance_and_forces(model):
    from scipy.spatial.transform import Rotation

    g, st, efv = model
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 9, (8, 3))
    num = np.array([11, 17] * 4)
    e0, f0, _ = efv(g, st, STATS, model_inputs(pos, num))
    rot = Rotation.random(random_state=2).as_matrix()
    e1, f1, _ = efv(g, st, STATS, model_inputs(pos @ rot.T + 5.0, num))
    assert float(e1) == pytest.approx(float(e0), abs=1e-10)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0) @ rot.T, atol=1e-10)
    perm = rng.permutation(8)
    e2, _, _ = efv(g, st, STATS, model_inputs(pos[perm], num[perm]))
    assert float(e2) == pytest.approx(float(e0), abs=1e-10)
    h = 1e-5
    for i, k in [(0, 0), (3, 2), (7, 1)]:
        dp = np.zeros_like(pos)
        dp[i, k] = h
        ep = float(efv(g, st, STATS, model_inputs(pos + dp, num))[0])
        em = float(efv(g, st, STATS, model_inputs(pos - dp, num))[0])
        assert float(f0[i, k]) == pytest.approx(-(ep - em) / (2 * h), rel=1e-6, abs=1e-8)


def test_total_charge_is_an_input(model):
    from flax import nnx

    g, st, efv = model
    pos = np.random.default_rng(4).uniform(0, 9, (6, 3))
    num = np.array([11, 17, 11, 17, 11, 11])
    e_neutral = float(efv(g, st, STATS, model_inputs(pos, num, 0.0))[0])
    e_cation = float(efv(g, st, STATS, model_inputs(pos, num, 1.0))[0])
    assert e_neutral != pytest.approx(e_cation)
    mod = nnx.merge(g, st)
    inp = model_inputs(pos, num, 1.0)
    q = mod.terms[0].charges(inp, mod.descriptors(inp, STATS))
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)


def test_configuration_errors():
    with pytest.raises(ValueError, match="unknown long-range term"):
        models.model_config(dict(CFG, long_range=[{"type": "magic"}]))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        models.model_config(dict(CFG, long_range=[{"type": "latent_coulomb", "sigma": -1}]))
    _, mcfg = models.model_config(CFG)
    ds = Dataset(np.random.default_rng(0).uniform(0, 5, (1, 4, 3)), [[11, 17, 11, 17]], [0.0],
                 cell=np.eye(3) * 10, pbc=[True] * 3)
    with pytest.raises(ValueError, match="open boundaries but the system is periodic"):
        make_inputs(ds, mcfg)


def test_reciprocal_coulomb_nacl_madelung():
    """Rock salt, conventional cell (a = 5.64 Å): E = -M k N_pairs / r0 with the Madelung
    constant M = 1.747565 (narrow Gaussians: the smearing correction erfc(r0/2σ) ~ 1e-23)."""

    a = 5.64
    na = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]) * a
    pos = np.vstack([na, na + [a / 2, 0, 0]])
    q = np.r_[np.ones(4), -np.ones(4)]
    e = coulomb_reciprocal(jnp.asarray(pos), jnp.asarray(q), jnp.ones(8, bool), jnp.eye(3) * a, 0.2, 20)
    expected = -4 * 1.747565 * COULOMB_K / (a / 2)
    assert float(e) == pytest.approx(expected, rel=1e-6)
    # a 2x1x1 supercell doubles it; translating all ions leaves it unchanged
    pos2 = np.vstack([pos, pos + [a, 0, 0]])
    e2 = coulomb_reciprocal(jnp.asarray(pos2), jnp.asarray(np.r_[q, q]), jnp.ones(16, bool),
                            jnp.diag(jnp.array([2 * a, a, a])), 0.2, 40)
    assert float(e2) == pytest.approx(2 * float(e), rel=1e-8)
    e3 = coulomb_reciprocal(jnp.asarray(pos + 0.37), jnp.asarray(q), jnp.ones(8, bool), jnp.eye(3) * a, 0.2, 20)
    assert float(e3) == pytest.approx(float(e), rel=1e-10)


def test_reciprocal_coulomb_per_axis_indices_in_an_elongated_cell():
    """Rock salt stacked 4 conventional cells along z (5.64 x 5.64 x 22.56 Å): the Madelung
    energy of 16 ion pairs, -16 M k / r0, with k-indices (20, 20, 80), the same |k| reach
    along every axis, from a fifteenth of the vectors an isotropic 80 would take."""

    a = 5.64
    na = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]) * a
    cell = np.vstack([na, na + [a / 2, 0, 0]])
    pos = np.vstack([cell + [0, 0, i * a] for i in range(4)])
    q = np.tile(np.r_[np.ones(4), -np.ones(4)], 4)
    e = coulomb_reciprocal(jnp.asarray(pos), jnp.asarray(q), jnp.ones(32, bool), jnp.diag(jnp.array([a, a, 4 * a])),
                           0.2, (20, 20, 80))
    assert float(e) == pytest.approx(-16 * 1.747565 * COULOMB_K / (a / 2), rel=1e-6)
    assert len(k_index_vectors((20, 20, 80))) == 41 * 41 * 161 - 1 < len(k_index_vectors(80)) / 15
    with pytest.raises(ValueError, match="k_index_max"):
        k_index_vectors(-1)
    with pytest.raises(ValueError, match="k_index_max"):
        LatentCoulombConfig(method="reciprocal", k_index_max=[4, 4])
    assert LatentCoulombConfig(method="reciprocal", k_index_max=[4, 4, 9]).k_index_max == (4, 4, 9)


def test_padding_on_top_of_a_real_atom_gives_finite_forces():
    """Padding rows sit at the origin; a real atom there must not make NaN gradients."""
    pos = jnp.asarray([[0.0, 0.0, 0.0], [1.5, 0.2, 0.0], [0.0, 1.7, 0.4], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    q = jnp.asarray([0.5, -0.3, -0.2, 0.0, 0.0])
    mask = jnp.asarray([True, True, True, False, False])
    for block in (2, 128):
        for sigma in (0.0, 0.5):
            g = jax.grad(lambda p, s=sigma, b=block: coulomb_direct(p, q, mask, sigma=s, block=b))(pos)
            assert np.all(np.isfinite(np.asarray(g)))
            ref = jax.grad(lambda p, s=sigma: coulomb_direct(p[:3], q[:3], sigma=s))(pos)
            np.testing.assert_allclose(np.asarray(g)[:3], np.asarray(ref)[:3], rtol=1e-12)
