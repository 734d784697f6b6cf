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


def random_box(n=48, seed=0, charged=0.0):
    rng = np.random.default_rng(seed)
    cell = np.array([[9.0, 0.0, 0.0], [1.2, 9.5, 0.0], [0.4, -0.8, 8.6]])  # triclinic
    x = rng.uniform(size=(n, 3)) @ cell
    q = rng.normal(size=n)
    return x, q - q.mean() + charged / n, cell


def test_coulomb_p3m_matches_the_reciprocal_sum():
    """P3M on a mesh of σ/2 against lrnn's own Ewald-type k-space sum (exact to e^{-k²σ²} ~ 1e-13)."""
    from lrnn.longrange.coulomb import coulomb_reciprocal
    from lrnn.longrange.pme import coulomb_p3m, mesh_shape
    from lrnn.units import COULOMB_K

    jax.config.update("jax_enable_x64", True)
    sigma = 1.0
    for charged in (0.0, 1.5):
        x, q, cell = random_box(charged=charged)
        m = jnp.ones(len(q), bool)
        shape = mesh_shape(cell, sigma / 2)
        def strained(energy):  # E(x, q, ε) of positions and cell under the homogeneous strain I + ε
            return lambda x, q, eps: energy(x @ (jnp.eye(3) + eps).T, q, m, cell @ (jnp.eye(3) + eps).T)

        f = jax.jit(jax.value_and_grad(strained(lambda *a: coulomb_p3m(*a, sigma, shape)), argnums=(0, 1, 2)))
        g = jax.value_and_grad(strained(lambda *a: coulomb_reciprocal(*a, sigma, 12)), argnums=(0, 1, 2))
        eps = jnp.zeros((3, 3))
        (e, (gx, gq, gc)), (e_ref, (gx_ref, gq_ref, gc_ref)) = f(x, q, eps), g(x, q, eps)
        # a charged cell: the k -> 0 background term -2πkσ²Q²/V, which the reciprocal sum omits
        background = -2 * np.pi * COULOMB_K * sigma**2 * q.sum() ** 2 / abs(np.linalg.det(cell))
        assert abs(float(e) - float(e_ref) - background) < 1e-6 * abs(float(e_ref))
        scale = np.abs(gx_ref).max()
        np.testing.assert_allclose(gx, gx_ref, atol=1e-4 * scale)  # forces
        np.testing.assert_allclose(gq, np.asarray(gq_ref) + 2 * background / q.sum() if charged else gq_ref,
                                   atol=1e-4 * np.abs(gq_ref).max())  # potentials
        # the strain derivative (virial, stress); a charged cell's background term scales as 1/V
        np.testing.assert_allclose(gc, np.asarray(gc_ref) - background * np.eye(3), atol=1e-5 * np.abs(gc_ref).max())
        # an atom moved by a lattice vector: the same periodic system
        x2 = x.copy()
        x2[5] += cell[1] - cell[2]
        assert abs(float(f(x2, q, eps)[0]) - float(e)) < 1e-9 * abs(float(e))


def test_p3m_mesh_shape_errors():
    from lrnn.longrange.pme import mesh_shape

    with pytest.raises(ValueError, match="non-singular"):
        mesh_shape(np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="spacing must be > 0"):
        mesh_shape(np.eye(3) * 10, 0.0)
    # jax-pme's rule: per axis the smallest power of two >= 2·L/spacing + 1 (41, 81, 21 here)
    assert mesh_shape(np.diag([10.0, 20.0, 5.0]), 0.5) == (64, 128, 32)


def test_potential_uses_the_p3m_mesh_and_matches_the_reciprocal_model():
    """The same weights with ``method: p3m`` (mesh plan from fmm_min_atoms atoms on) and
    ``method: reciprocal``: energy, forces and stress agree; a new cell gets a new mesh."""
    from ase.build import bulk

    from lrnn import md
    from lrnn.md import untrained_potential
    from tests.conftest import TINY_MODEL

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)  # jax-md: cell heights over 2 (rcut + skin)
    atoms.positions += np.random.default_rng(0).normal(scale=0.1, size=atoms.positions.shape)
    res, pots = {}, {}
    for m in ("reciprocal", "p3m"):
        cfg = dict(TINY_MODEL, long_range=[{"type": "latent_coulomb", "sigma": 1.0, "fit": [4], "method": m}],
                   fmm_min_atoms=64)
        pots[m] = untrained_potential([11, 17], cfg, seed=1, dtype="float64", output_scale=0.1, term_scale=30.0)
        res[m] = pots[m].calculate(atoms.positions, atoms.numbers, atoms.cell.array)
    assert pots["p3m"].plans.mesh.shape == (64, 64, 64) and pots["reciprocal"].plans.mesh is None
    # equal to the mesh error, and not bit-equal: the mesh path was taken (not the reciprocal fallback)
    assert 0 < abs(res["p3m"]["energy"] - res["reciprocal"]["energy"]) < 1e-6
    f = res["reciprocal"]["forces"]
    np.testing.assert_allclose(res["p3m"]["forces"], f, atol=1e-3 * np.abs(f).max())
    np.testing.assert_allclose(res["p3m"]["stress"], res["reciprocal"]["stress"], atol=1e-5 * np.abs(
        res["reciprocal"]["stress"]).max())
    system = md.MDSystem(pots["p3m"], atoms.positions, atoms.numbers, cell=atoms.cell.array)  # jax-md: same mesh
    assert system.allocate_plans().mesh == pots["p3m"].plans.mesh
    assert abs(system.total_energy(atoms.positions) - res["p3m"]["energy"]) < 1e-8
    pots["p3m"].calculate(atoms.positions * 0.6, atoms.numbers, atoms.cell.array * 0.6)
    assert pots["p3m"].plans.mesh.shape == (32, 32, 32)  # re-planned for the smaller cell
