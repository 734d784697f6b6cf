"""The user-facing potential: NumPy in/out, validation, consistency with training data."""

import jax
import numpy as np
import pytest

import lrnn


@pytest.fixture(scope="module")
def pot(trained_checkpoint):
    return lrnn.load(trained_checkpoint)


def test_energy_forces_numpy(pot, paracetamol):
    e, f = pot.energy_forces(paracetamol.positions[0], paracetamol.numbers[0])
    assert isinstance(e, float) and f.shape == (20, 3) and f.dtype == np.float64
    # same numbers from the batched predictor, and from chemical symbols
    eb, fb, _ = pot.predict(paracetamol.subset([0, 1, 2]), batch_size=2)
    assert eb[0] == pytest.approx(e, abs=1e-4)
    np.testing.assert_allclose(fb[0], f, atol=1e-4)
    from ase.data import chemical_symbols

    e2, _ = pot.energy_forces(paracetamol.positions[0], [chemical_symbols[z] for z in paracetamol.numbers[0]])
    assert e2 == pytest.approx(e)
    # energies are in eV near the rMD17 paracetamol total energy
    assert abs(e - paracetamol.energy[0]) < 5.0


def test_bad_inputs_named(pot, paracetamol):
    pos, num = paracetamol.positions[0].copy(), paracetamol.numbers[0]
    bad = pos.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        pot.energy_forces(bad, num)
    bad = pos.copy()
    bad[4] = bad[5] + 0.05
    with pytest.raises(ValueError, match="atoms 4 and 5 are 0.0866 Å apart"):
        pot.energy_forces(bad, num)
    with pytest.raises(ValueError, match=r"species \['Cl'\]"):
        pot.energy_forces(pos, np.r_[num[:-1], 17])
    with pytest.raises(ValueError, match="shapes must match"):
        pot.energy_forces(pos[:-1], num)


def test_changing_sizes_reuse_buckets(pot, paracetamol):
    from lrnn.potential import batched_efv

    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    pot.energy_forces(pos, num)
    n0 = batched_efv._cache_size()
    pot.energy_forces(pos[:-1], num[:-1])  # 19 atoms: same padded size bucket
    pot.energy_forces(pos[:-2], num[:-2])
    assert batched_efv._cache_size() == n0


def test_float64_on_request(trained_checkpoint, paracetamol, tmp_path):
    """A checkpoint marked float64 runs the network in float64 and agrees with float32."""
    import jax.numpy as jnp

    from lrnn import checkpoint as ckpt

    meta, leaves, _ = ckpt.load(trained_checkpoint)
    ckpt.save(tmp_path / "f64", meta=dict(meta, dtype="float64"), params=leaves)
    p64 = lrnn.load(tmp_path / "f64")
    assert p64.dtype == jnp.float64 and jax.tree.leaves(p64.state)[0].dtype == jnp.float64
    p32 = lrnn.load(trained_checkpoint)
    e64, f64 = p64.energy_forces(paracetamol.positions[1], paracetamol.numbers[1])
    e32, f32 = p32.energy_forces(paracetamol.positions[1], paracetamol.numbers[1])
    assert e64 == pytest.approx(e32, abs=2e-3)
    np.testing.assert_allclose(f64, f32, atol=2e-4)


def test_charge_terms_are_the_latent_charge_terms():
    from lrnn.models import model_config
    from tests.conftest import LATENT_COULOMB, TINY_MODEL

    # latent_coulomb and sog equilibrate latent charges to the total charge; dispersion does not
    def has_q(long_range):
        return model_config(dict(TINY_MODEL, type_map=[11, 17], long_range=long_range))[1].has_charge_terms

    assert has_q(LATENT_COULOMB["long_range"]) and has_q([{"type": "sog", "fit": [4]}])
    assert not has_q([{"type": "dispersion"}]) and not has_q([])


def test_charged_system_without_total_charge_raises(lc_pot):
    from tests.conftest import nacl_cluster

    pos, num = nacl_cluster([11, 17, 11, 17, 11])  # sum(Z) = 67: charged or a radical
    with pytest.raises(ValueError, match=r"odd number of electrons.*pass total_charge="):
        lc_pot.energy_forces(pos, num)
    with pytest.raises(ValueError, match="odd number of electrons"):
        lc_pot.calculate(pos, ["Na", "Cl", "Na", "Cl", "Na"])
    e1, f1 = lc_pot.energy_forces(pos, num, total_charge=1.0)
    e0, f0 = lc_pot.energy_forces(pos, num, total_charge=0.0)
    assert np.isfinite(e1) and abs(e1 - e0) > 1e-6  # the charge enters the latent Coulomb energy
    assert np.max(np.abs(f1 - f0)) > 1e-6
    # an even electron count: None is neutral, bit for bit
    e_none, f_none = lc_pot.energy_forces(pos[:4], num[:4])
    e_zero, f_zero = lc_pot.energy_forces(pos[:4], num[:4], total_charge=0.0)
    assert e_none == e_zero and np.array_equal(f_none, f_zero)
    with pytest.raises(ValueError, match="total charge must be finite"):
        lc_pot.energy_forces(pos[:4], num[:4], total_charge=np.nan)


def test_total_charge_ignored_without_charge_terms(pot, paracetamol):
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    keep = np.arange(len(num)) != np.flatnonzero(num == 1)[0]  # drop one H: sum(Z) odd
    pos, num = pos[keep], num[keep]
    assert num.sum() % 2 == 1
    e_none, f_none = pot.energy_forces(pos, num)  # the local model does not depend on the charge
    e_one, f_one = pot.energy_forces(pos, num, total_charge=1.0)
    assert np.isfinite(e_none) and e_none == e_one and np.array_equal(f_none, f_one)


def test_reciprocal_term_on_open_system_names_the_fix():
    from tests.conftest import nacl_cluster, nacl_potential

    pot = nacl_potential(long_range=[{"type": "latent_coulomb", "sigma": 0.5, "fit": [4], "method": "reciprocal"}])
    pos, num = nacl_cluster([11, 17, 11, 17])
    with pytest.raises(ValueError, match=r"'latent_coulomb' with method 'reciprocal' needs a periodic cell.*"
                                         r"use method: direct or fmm for open systems, or give the system a periodic"):
        pot.energy_forces(pos, num)
    e, f = pot.energy_forces(pos + 4.0, num, cell=np.eye(3) * 9.0)  # with a periodic cell it evaluates
    assert np.isfinite(e) and np.all(np.isfinite(f))
