"""The model bundle (lrnn.bundle): init/apply over one params pytree, one forces function."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn import bundle
from lrnn.potential import Potential, enable_x64, untrained_potential

TYPE_MAP = [1, 8]
CONFIG = {"type": "deeppot_se", "type_map": TYPE_MAP, "rcut": 4.0, "rcut_smth": 1.0, "embed": [8, 16],
          "axis_neurons": 4, "fit": [16, 16], "long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [8]}]}


def water_pair(rng):
    o = np.array([[0.0, 0.0, 0.0], [2.9, 0.3, 0.1]])
    h = np.array([[0.96, 0.0, 0.0], [-0.24, 0.93, 0.0], [3.5, 1.0, 0.2], [3.2, -0.5, 0.6]])
    return np.vstack([o, h]) + 0.05 * rng.normal(size=(6, 3)), np.array([8, 8, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def setup():
    enable_x64()
    model = bundle.model(CONFIG, "float64")
    params = model.init(3)
    params = dataclasses.replace(params, energy_shift=np.array([-13.6, -2041.3]))  # eV, H and O
    pos, num = water_pair(np.random.default_rng(0))
    system, nbrs = bundle.prepare(model, pos, num)
    return model, params, system, nbrs, pos, num


def test_apply_includes_the_energy_shift(setup):
    model, params, system, nbrs, _, num = setup
    e = float(model.apply(params, system, nbrs))
    e_net = float(bundle.network_energy(model.graphdef, params, system, nbrs))
    assert e - e_net == pytest.approx(4 * -13.6 + 2 * -2041.3, abs=1e-9)  # counted by hand: 4 H, 2 O
    r = bundle.energy_forces_virial(model, params, system, nbrs)
    assert float(r.energy) == pytest.approx(e, abs=1e-9)
    assert float(bundle.reference_energy(params, np.asarray(system.species))) == pytest.approx(4 * -13.6 - 2 * 2041.3)


def test_forces_and_virial_are_gradients_of_apply(setup):
    model, params, system, nbrs, pos, _ = setup
    r = bundle.energy_forces_virial(model, params, system, nbrs)
    h = 1e-5
    for i, a in [(0, 0), (3, 1), (5, 2)]:
        d = np.zeros_like(pos)
        d[i, a] = h
        ep = float(model.apply(params, dataclasses.replace(system, positions=system.positions + d), nbrs))
        em = float(model.apply(params, dataclasses.replace(system, positions=system.positions - d), nbrs))
        assert float(r.forces[i, a]) == pytest.approx(-(ep - em) / (2 * h), rel=1e-6, abs=1e-8)
    # virial: -dE/dε of a homogeneous strain (free space: positions only)
    eps = np.zeros((3, 3))
    eps[0, 1] = h
    ep = float(model.apply(params, dataclasses.replace(system, positions=system.positions @ (np.eye(3) + eps).T),
                           nbrs))
    em = float(model.apply(params, dataclasses.replace(system, positions=system.positions @ (np.eye(3) - eps).T),
                           nbrs))
    assert float(r.virial[0, 1]) == pytest.approx(-(ep - em) / (2 * h), rel=1e-6, abs=1e-8)


def test_rotation_invariance_and_charges(setup):
    model, params, system, nbrs, pos, num = setup
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    s2, n2 = bundle.prepare(model, pos @ q.T + 1.7, num)
    assert float(model.apply(params, s2, n2)) == pytest.approx(float(model.apply(params, system, nbrs)), abs=1e-9)
    r = bundle.energy_forces_virial(model, params, system, nbrs, with_charges=True)
    assert float(jnp.sum(r.charges)) == pytest.approx(0.0, abs=1e-12)  # equilibrated to the total charge


def test_committee_is_a_vmap_over_stacked_params(setup):
    model, params, system, nbrs, _, _ = setup
    members = [dataclasses.replace(model.init(s), energy_shift=params.energy_shift) for s in (0, 1, 2)]
    stacked = bundle.Params(jax.tree.map(lambda *x: jnp.stack(x), *[p.weights for p in members]), params.stats,
                            np.stack([p.energy_shift for p in members]))
    e = jax.vmap(model.apply, in_axes=(bundle.MEMBER_AXES, None, None))(stacked, system, nbrs)
    for k, p in enumerate(members):
        assert float(e[k]) == pytest.approx(float(model.apply(p, system, nbrs)), abs=1e-9)
    assert float(jnp.std(e)) > 0  # different seeds, different members


def test_save_load_round_trip_and_potential_agree(setup, tmp_path):
    model, params, system, nbrs, pos, num = setup
    bundle.save(tmp_path / "ckpt", model, params, {"note": "test"})
    m2, p2 = bundle.load(tmp_path / "ckpt")
    assert m2.model_config == model.model_config
    np.testing.assert_array_equal(p2.energy_shift, params.energy_shift)
    assert float(m2.apply(p2, system, nbrs)) == float(model.apply(params, system, nbrs))
    pot = Potential.from_checkpoint(tmp_path / "ckpt")
    r = pot.calculate(pos, num)
    ref = bundle.energy_forces_virial(model, params, system, nbrs)
    assert r["energy"] == pytest.approx(float(ref.energy), abs=1e-9)
    np.testing.assert_allclose(r["forces"], np.asarray(ref.forces), atol=1e-10)


def test_potential_exposes_its_bundle():
    pot = untrained_potential(TYPE_MAP, {"rcut": 4.0, "embed": [8], "fit": [8]}, seed=1)
    pos, num = water_pair(np.random.default_rng(2))
    system, nbrs = bundle.prepare(pot.model, pos, num)
    assert float(pot.model.apply(pot.params, system, nbrs)) == pytest.approx(pot.calculate(pos, num)["energy"],
                                                                             abs=1e-4)


def test_bad_input_is_named(setup):
    model, _, _, _, pos, num = setup
    with pytest.raises(ValueError, match="not known to the model|species"):
        bundle.prepare(model, pos, np.array([8, 8, 1, 1, 1, 6]))
    bad = pos.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="finite|NaN"):
        bundle.prepare(model, bad, num)
    with pytest.raises(ValueError, match="dtype"):
        bundle.model(CONFIG, "float16")


def test_combine_makes_a_committee_of_separate_checkpoints(tmp_path):
    """Two separately saved models combined: the committee's energy is the mean of the two
    evaluated alone, its spread their population std; a third model with another cutoff is
    refused by name, as is one with other descriptor statistics."""
    import lrnn
    from lrnn.cli import main
    from tests.conftest import TINY_MODEL

    pos = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0], [2.5, 0.3, 0.1]])
    num = np.array([8, 1, 1, 1])
    paths = []
    for seed in (0, 1):
        pot = untrained_potential([1, 8], dict(TINY_MODEL), seed=seed)
        pot.params = dataclasses.replace(pot.params, energy_shift=np.array([-13.6 - seed, -2040.0]))
        paths.append(bundle.save(tmp_path / f"m{seed}", pot.model, pot.params))
    assert main(["combine", str(tmp_path / "committee"), *map(str, paths)]) == 0
    com = lrnn.load(tmp_path / "committee")
    assert com.committee == 2
    alone = [lrnn.load(p).calculate(pos, num, total_charge=1) for p in paths]
    r = com.calculate(pos, num, total_charge=1)
    assert r["energy"] == pytest.approx(np.mean([a["energy"] for a in alone]), abs=1e-5)
    np.testing.assert_allclose(r["forces"], np.mean([a["forces"] for a in alone], axis=0), atol=1e-5)
    assert r["energy_std"] == pytest.approx(abs(alone[0]["energy"] - alone[1]["energy"]) / 2, rel=1e-4)

    other = untrained_potential([1, 8], dict(TINY_MODEL, rcut=3.5))
    bundle.save(tmp_path / "other", other.model, other.params)
    with pytest.raises(ValueError, match=r"models differ in \['rcut'\]"):
        bundle.combine([paths[0], tmp_path / "other"])
    shifted = untrained_potential([1, 8], dict(TINY_MODEL))
    shifted.params = dataclasses.replace(shifted.params, stats=dict(shifted.params.stats, n_norm=jnp.asarray(7.0)))
    bundle.save(tmp_path / "stats", shifted.model, shifted.params)
    with pytest.raises(ValueError, match="descriptor statistics 'n_norm' differ"):
        bundle.combine([paths[0], tmp_path / "stats"])
