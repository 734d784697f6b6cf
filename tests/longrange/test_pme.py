"""Periodic Coulomb via jax-pme: the NaCl Madelung constant and derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jaxpme")
pytest.importorskip("ase")

from lrnn.longrange.pme import (  # noqa: E402
    periodic_energy,
    periodic_plan,
    periodic_potential,
    periodic_potential_with_plan,
)

MADELUNG_NACL = 1.747565


def nacl(reps=1, r0=1.0):
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=2 * r0, cubic=True).repeat(reps)
    q = np.where(atoms.get_atomic_numbers() == 11, 1.0, -1.0)
    return atoms.get_positions(), q, np.asarray(atoms.get_cell().array)


@pytest.mark.parametrize("method", ["p3m", "ewald"])
def test_madelung_nacl(method):
    x, q, cell = nacl(reps=2, r0=1.3)
    phi = np.asarray(periodic_potential(x, q, cell, method=method))
    # every ion sees φ = -q M / r0
    np.testing.assert_allclose(-phi * q * 1.3, MADELUNG_NACL, rtol=2e-6)
    e = float(periodic_energy(x, q, cell, method=method))
    np.testing.assert_allclose(-e / (len(q) / 2) * 1.3, MADELUNG_NACL, rtol=2e-6)


def test_forces_charge_grad_and_jit():
    x, q, cell = nacl(reps=2)
    rng = np.random.default_rng(0)
    x = x + 0.05 * rng.normal(size=x.shape)
    pl = periodic_plan(x, cell)

    def energy(x, q):
        return 0.5 * jnp.sum(q * periodic_potential_with_plan(pl, x, q, cell))

    gx, gq = jax.jit(jax.grad(energy, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(q))
    phi = np.asarray(periodic_potential_with_plan(pl, x, q, cell))
    np.testing.assert_allclose(np.asarray(gq), phi, rtol=1e-8, atol=1e-10)
    # net force of a periodic system vanishes; finite-difference check on one coordinate
    # P3M mesh forces do not conserve momentum exactly (~1e-3 of a typical force)
    assert np.abs(np.asarray(gx).sum(0)).max() < 2e-3 * np.abs(np.asarray(gx)).mean() * 10
    d = np.zeros_like(x)
    d[3, 1] = 1e-5
    fd = (float(energy(x + d, q)) - float(energy(x - d, q))) / 2e-5
    assert abs(fd - float(gx[3, 1])) < 1e-5 * max(1.0, abs(fd))


def test_bad_input():
    x, q, cell = nacl()
    with pytest.raises(ValueError, match="charges"):
        periodic_potential(x, q[:3], cell)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        periodic_plan(bad, cell)
    with pytest.raises(ValueError, match="at least 2"):
        periodic_plan(x[:1], cell)
