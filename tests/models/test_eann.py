"""EANN local model (model type ``eann``): the embedded density against a direct
evaluation of its defining sums, E(3) invariance, forces and virial against finite
differences, smoothness across the cutoff, padding independence, a latent-Coulomb term
composed with it, and training, loading, ASE, jax-md and `lrnn md` with it."""

import math

import jax
import numpy as np
import pytest

import lrnn
from lrnn import models
from lrnn.nn import merge
from lrnn.potential import energy_forces_virial as _efv
from tests.conftest import LATENT_COULOMB
from tests.models.test_equivariant import (
    STATS,
    build,
    check_ase_jax_md_and_md_command,
    check_invariance_and_fd,
    inputs_for,
)

efv = jax.jit(_efv, static_argnums=0)

TINY_EANN = {"type": "eann", "rcut": 4.0, "n_radial": 5, "l_max": 2, "channels": 3, "fit": [8]}
TINY_REANN = dict(TINY_EANN, recursions=2, recursion_fit=[6])


@pytest.fixture(scope="module", params=["eann", "reann"])
def setup(request):
    g, st, mcfg = build(TINY_EANN if request.param == "eann" else TINY_REANN)
    if request.param == "reann":  # the coefficient nets start at zero: perturb them to test the recursion
        leaves, tree = jax.tree.flatten(st)
        keys = jax.random.split(jax.random.key(7), len(leaves))
        st = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
    return g, st, mcfg, STATS


def direct_density(pos, types, coeff_of_atom, rc, k, n_norm, l_max=2):
    """ρ_{i,cL} for every atom by the double sum, with neighbour j's coefficients coeff_of_atom[j] (K, C)."""
    centres, width = np.linspace(0, rc, k), rc / (k - 1)
    rho = []
    for i in range(len(pos)):
        rij = pos - pos[i]
        r = np.linalg.norm(rij, axis=1)
        use = (r > 0) & (r < rc)
        fc = (0.5 * np.cos(np.pi * r / rc) + 0.5) ** 2
        gk = np.exp(-(((r[:, None] - centres) / width) ** 2)) * fc[:, None]
        amp = np.einsum("jk,jkc->jc", gk, coeff_of_atom)[use]  # (neighbours, channels)
        dots = (rij[use] @ rij[use].T) / rc**2
        rho.append(np.stack([np.einsum("jc,kc,jk->c", amp, amp, dots**L) / n_norm for L in range(l_max + 1)], -1).ravel())
    return np.array(rho)


def test_density_matches_its_definition(setup, paracetamol):
    """ρ_{i,cL} = (1/N̄) Σ_{j,j'} a_jc a_j'c (r_ij·r_ij')^L / r_c^{2L}, evaluated directly in
    NumPy from the model's coefficients (the double-sum form of the multinomial one); for
    REANN, each round's neighbour coefficients W_z + G_z(ρ_j) from the previous round's
    direct densities."""
    g, st, mcfg, stats = setup
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    inp, _ = inputs_for(mcfg, pos, num)
    model = merge(g, st)
    desc = jax.jit(lambda s, i: merge(g, s).descriptors(i, stats))(st, inp)
    coeff = np.asarray(model.coeff[...], np.float64)
    types = np.array([mcfg.type_map.index(z) for z in num])
    n_norm = float(stats["n_norm"])
    rho = direct_density(pos, types, coeff[types], mcfg.rcut, mcfg.n_radial, n_norm)
    for rnd in range(mcfg.recursions):
        net = getattr(model, f"recursion{rnd}")
        w = np.stack([coeff[types[j]] + np.asarray(net(int(types[j]), rho[j][None]), np.float64).reshape(coeff.shape[1:])
                      for j in range(len(pos))])
        rho = direct_density(pos, types, w, mcfg.rcut, mcfg.n_radial, n_norm)
    for a in range(len(mcfg.type_map)):
        if desc[a] is not None:  # centres of species a in atom order
            np.testing.assert_allclose(np.asarray(desc[a][0]), rho[types == a], rtol=1e-8, atol=1e-11)


def test_untrained_reann_is_its_eann(paracetamol):
    """The coefficient nets start at zero: a fresh REANN's descriptor is that of the EANN
    with the same seed (the same element coefficients, drawn first)."""
    out = []
    for cfg in (TINY_REANN, TINY_EANN):
        g, st, mcfg = build(cfg)
        inp, _ = inputs_for(mcfg, paracetamol.positions[0], paracetamol.numbers[0])
        out.append(jax.jit(lambda s, i, g=g: merge(g, s).descriptors(i, STATS))(st, inp))
    np.testing.assert_array_equal(merge(*build(TINY_REANN)[:2]).coeff[...], merge(*build(TINY_EANN)[:2]).coeff[...])
    for x, y in zip(*out):
        if x is not None:
            assert float(np.abs(x[0]).max()) > 0
            np.testing.assert_allclose(np.asarray(x[0]), np.asarray(y[0]), rtol=1e-12)


def test_invariance_forces_virial(setup, paracetamol):
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    e0 = check_invariance_and_fd(*setup, pos, num, [(0, 0), (5, 1), (12, 2), (19, 0)])
    g, st, mcfg, stats = setup
    assert abs(float(efv(g, st, stats, inputs_for(mcfg, paracetamol.positions[1], num)[0])[0]) - e0) > 1e-6


def test_forces_continuous_across_cutoff_and_padding(setup, paracetamol):
    from lrnn.neighbors import Capacity

    g, st, mcfg, stats = setup
    rc = mcfg.rcut
    base = np.array([[0.0, 0, 0], [0.0, 0.97, 0.0], [0.9, -0.3, 0.0]])
    cap = Capacity((4, 0, 0, 2), 3)
    out = []
    for d in (rc - 1e-7, rc + 1e-7, rc + 0.5):
        inp, _ = inputs_for(mcfg, np.vstack([base, [[-d, 0.0, 0.0]]]), [8, 1, 1, 1], cap)
        e, f, _ = efv(g, st, stats, inp)
        out.append((float(e), np.asarray(f)))
    assert np.abs(out[1][1] - out[0][1]).max() < 1e-6 and abs(out[1][0] - out[0][0]) < 1e-10
    assert np.abs(out[2][1][3]).max() == 0.0
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    inp, cap = inputs_for(mcfg, pos, num)
    big = Capacity(tuple(c + 3 for c in cap.centres), cap.neighbors + 5)
    e = float(efv(g, st, stats, inp)[0])
    assert float(efv(g, st, stats, inputs_for(mcfg, pos, num, big)[0])[0]) == pytest.approx(e, abs=1e-12)


def test_latent_coulomb_composes(paracetamol):
    g, st, mcfg = build(dict(TINY_EANN, **LATENT_COULOMB))
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    check_invariance_and_fd(g, st, mcfg, STATS, pos, num, [(3, 1)])
    inp, _ = inputs_for(mcfg, pos, num)
    terms = jax.jit(lambda s, i: merge(g, s).energy_terms(i, STATS))(st, inp)
    assert set(terms) == {"short", "0:latent_coulomb"} and abs(float(terms["0:latent_coulomb"])) > 0


@pytest.fixture(scope="module")
def trained_eann(tiny_config, tmp_path_factory):
    from lrnn.train import load_config, train

    out = tmp_path_factory.mktemp("eann")
    cfg = tiny_config(out=out, max_steps=4, refit_shift=False)
    cfg["model"] = dict(TINY_EANN)
    return out / "checkpoint", train(load_config(cfg), quiet=True)


def test_train_and_load(trained_eann, paracetamol):
    path, summary = trained_eann
    pot = lrnn.load(path)
    assert summary["steps"] >= 4 and "eann" in repr(pot)
    e, f = pot.energy_forces(paracetamol.positions[0], paracetamol.numbers[0])
    assert np.all(np.isfinite(f)) and abs(e - paracetamol.energy[0]) < 1.0 * len(f)  # eV: 4 steps from random


def test_ase_calculator_jax_md_and_md_command(trained_eann, paracetamol, tmp_path):
    check_ase_jax_md_and_md_command(trained_eann[0], paracetamol, tmp_path)


def test_bad_configs():
    with pytest.raises(ValueError, match="grid"):
        models.model_config(dict(TINY_EANN, type_map=[1], grid=[4.0, 2]))
    with pytest.raises(ValueError, match="n_radial"):
        models.model_config(dict(TINY_EANN, type_map=[1], n_radial=1))
    with pytest.raises(ValueError, match="recursions"):
        models.model_config(dict(TINY_EANN, type_map=[1], recursions=-1))
    assert math.isclose(models.model_config(dict(TINY_EANN, type_map=[1]))[1].rcut, 4.0)
