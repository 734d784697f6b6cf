"""MACE-like equivariant local model (model type ``mace``): E(3) invariance, forces and
virial against finite differences, smoothness across the cutoff, padding independence, a
latent-Coulomb term composed with it, and training, loading, ASE and jax-md with it."""

from dataclasses import replace

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

import lrnn
from lrnn import md, models
from lrnn.ase_calculator import LrnnCalculator
from lrnn.batch import make_inputs
from lrnn.md_cli import main as md_main
from lrnn.neighbors import Capacity
from lrnn.nn import merge, split
from lrnn.potential import energy_forces_virial as _efv
from lrnn.system import Dataset
from tests.conftest import LATENT_COULOMB

efv = jax.jit(_efv, static_argnums=0)

TINY_MACE = {"type": "mace", "rcut": 4.0, "channels": 4, "l_max": 2, "hidden_l": 1, "correlation": 3,
             "n_layers": 2, "radial_mlp": [8], "readout": [8]}


def build(model=None, type_map=(1, 6, 7, 8), seed=0):
    cfg = dict(model or TINY_MACE, type_map=list(type_map))
    g, st = split(models.create(cfg, seed=seed, dtype=jnp.float64))
    return g, st, models.model_config(cfg)[1]


def inputs_for(mcfg, pos, numbers, capacity=None, **kw):
    ds = Dataset(np.asarray(pos)[None], np.asarray(numbers)[None], [0.0], **kw)
    inp, cap = make_inputs(ds, mcfg, capacity, dtype=np.float64)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), inp), cap


#: the model reads only n_norm (the neighbour count that normalises the sums over neighbours)
STATS = {"s_avg": jnp.zeros(4), "s_std": jnp.ones(4), "dir_std": jnp.ones(4), "n_norm": jnp.asarray(8.0)}


@pytest.fixture(scope="module")
def setup():
    return build() + (STATS,)


def check_invariance_and_fd(g, st, mcfg, stats, pos, num, fd_points):
    inp, cap = inputs_for(mcfg, pos, num)
    e0, f0, w0 = efv(g, st, stats, inp)
    rot = Rotation.random(random_state=1).as_matrix() @ np.diag([1.0, 1.0, -1.0])  # with a reflection
    e1, f1, _ = efv(g, st, stats, inputs_for(mcfg, pos @ rot.T + np.array([3.0, -7.0, 11.0]), num, cap)[0])
    assert float(e1) == pytest.approx(float(e0), abs=1e-10)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0) @ rot.T, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(num))
    e2, f2, _ = efv(g, st, stats, inputs_for(mcfg, pos[perm], num[perm], cap)[0])
    assert float(e2) == pytest.approx(float(e0), abs=1e-10)
    np.testing.assert_allclose(np.asarray(f2), np.asarray(f0)[perm], atol=1e-10)
    h = 1e-5
    for i, k in fd_points:  # same layout (no neighbour changes at h): reuse the compiled function
        dp = np.zeros_like(pos)
        dp[i, k] = h
        ep = float(efv(g, st, stats, replace(inp, positions=jnp.asarray(pos + dp)))[0])
        em = float(efv(g, st, stats, replace(inp, positions=jnp.asarray(pos - dp)))[0])
        assert float(f0[i, k]) == pytest.approx(-(ep - em) / (2 * h), rel=1e-6, abs=1e-9)
    assert np.abs(np.asarray(f0).sum(axis=0)).max() < 1e-10  # Newton's third law
    np.testing.assert_allclose(np.asarray(w0), np.asarray(pos).T @ np.asarray(f0), atol=1e-9)  # free molecule
    return float(e0)


def test_invariance_forces_virial(setup, paracetamol):
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    e0 = check_invariance_and_fd(*setup, pos, num, [(0, 0), (5, 1), (12, 2), (19, 0)])
    g, st, mcfg, stats = setup
    e_moved = float(efv(g, st, stats, inputs_for(mcfg, paracetamol.positions[1], num)[0])[0])
    assert abs(e_moved - e0) > 1e-6  # the energy does depend on the geometry


def test_energy_independent_of_padding_and_neighbour_mode(setup, paracetamol):
    g, st, mcfg, stats = setup
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    inp, cap = inputs_for(mcfg, pos, num)
    e = float(efv(g, st, stats, inp)[0])
    big = Capacity(tuple(c + 3 for c in cap.centres), cap.neighbors + 5)  # one shape for both modes
    assert float(efv(g, st, stats, inputs_for(mcfg, pos, num, big)[0])[0]) == pytest.approx(e, abs=1e-12)
    cut = models.model_config(dict(TINY_MACE, type_map=[1, 6, 7, 8], neighbor_mode="cutoff"))[1]
    assert float(efv(g, st, stats, inputs_for(cut, pos, num, big)[0])[0]) == pytest.approx(e, abs=1e-12)


def test_forces_continuous_across_cutoff(setup):
    """Move one H radially through r_c of an O centre: energy and forces change by O(δ)
    across the boundary, in both neighbour modes (one fixed capacity: one compile)."""
    g, st, mcfg, stats = setup
    rc = mcfg.rcut
    base = np.array([[0.0, 0, 0], [0.0, 0.97, 0.0], [0.9, -0.3, 0.0]])
    cap = Capacity((4, 0, 0, 2), 3)
    for mode in ("all", "cutoff"):
        cfg = models.model_config(dict(TINY_MACE, type_map=[1, 6, 7, 8], neighbor_mode=mode))[1]
        out = []
        for d in (rc - 1e-7, rc + 1e-7, rc - 2e-7, rc + 2e-7, rc + 0.5):
            inp, _ = inputs_for(cfg, np.vstack([base, [[-d, 0.0, 0.0]]]), [8, 1, 1, 1], cap)
            e, f, _ = efv(g, st, stats, inp)
            out.append((float(e), np.asarray(f)))
        jump = np.abs(out[1][1] - out[0][1]).max()
        assert jump < 1e-6, f"force jump {jump} eV/Å across rcut ({mode})"
        assert np.abs(out[3][1] - out[2][1]).max() <= 2.5 * jump + 1e-10  # Lipschitz: no step
        assert abs(out[1][0] - out[0][0]) < 1e-10
        assert np.abs(out[4][1][3]).max() == 0.0  # beyond r_c: no force on the far atom


def test_latent_coulomb_and_far_field_compose(paracetamol):
    g, st, mcfg = build(dict(TINY_MACE, radial_mlp=[], far_field={"r_on": 1.0, "r_off": 5.0}, **LATENT_COULOMB))
    stats = STATS
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    check_invariance_and_fd(g, st, mcfg, stats, pos, num, [(0, 0), (7, 2)])
    inp, _ = inputs_for(mcfg, pos, num)

    @jax.jit
    def parts(st, inp):
        module = merge(g, st)
        return module.energy_terms(inp, stats), module.charges(inp, stats)

    terms, q = parts(st, inp)
    assert set(terms) == {"short", "0:latent_coulomb"} and abs(float(terms["0:latent_coulomb"])) > 0
    assert abs(float(q.sum())) < 1e-10 and float(jnp.abs(q).max()) > 0
    desc = jax.eval_shape(lambda s, i: merge(g, s).descriptors(i, stats), st, inp)
    assert {x[0].shape[1] for x in desc if x} == {merge(g, st).descriptor_width}


@pytest.fixture(scope="module")
def trained_mace(tiny_config, tmp_path_factory):
    from lrnn.train import load_config, train

    out = tmp_path_factory.mktemp("mace")
    cfg = tiny_config(out=out, max_steps=4, refit_shift=False)
    cfg["model"] = dict(TINY_MACE, channels=2, l_max=1, correlation=2)  # the cheapest compile
    summary = train(load_config(cfg), quiet=True)
    return out / "checkpoint", summary


def test_train_and_load(trained_mace, paracetamol):
    """`lrnn train` with ``model.type: mace`` (float32); `lrnn.load` rebuilds the trained
    model: the same energy as the module re-created from the checkpoint's config and leaves."""
    from lrnn import checkpoint as ckpt

    path, summary = trained_mace
    assert summary["steps"] >= 4
    pot = lrnn.load(path)
    meta, leaves, _ = ckpt.load(path)
    assert meta["model"]["type"] == "mace" and "mace" in repr(pot)
    pos, num = paracetamol.positions[0], paracetamol.numbers[0]
    e, f = pot.energy_forces(pos, num)
    assert np.all(np.isfinite(f)) and abs(e - paracetamol.energy[0]) < 5.0
    module = models.create(meta["model"], seed=123, dtype=jnp.float32)
    g, st = split(module)
    st = jax.tree.unflatten(jax.tree.structure(st), [jnp.asarray(x) for x in leaves])
    mcfg = models.model_config(meta["model"])[1]
    inp, _ = make_inputs(Dataset(pos[None], num[None], [0.0]), mcfg, dtype=np.float32)
    stats = {k: jnp.asarray(v, jnp.float32) for k, v in meta["stats"].items()}
    e_direct = float(jax.jit(lambda s, i: merge(g, s).energy(i, stats))(st, jax.tree.map(lambda x: x[0], inp)))
    shift = float(np.asarray(meta["energy_shift"]) @ [np.sum(num == z) for z in mcfg.type_map])
    assert e == pytest.approx(e_direct + shift, abs=2e-3)


def check_ase_jax_md_and_md_command(checkpoint, structures, tmp_path):
    """The checkpoint through the ASE calculator, the jax-md energy function (the same energy
    as ``lrnn.load``'s) and 20 NVE steps of `lrnn md` (E_tot holds while E_pot moves)."""
    pot = lrnn.load(checkpoint)
    pos, num = structures.positions[0], structures.numbers[0]
    e, _ = pot.energy_forces(pos, num)
    atoms = Atoms(numbers=num, positions=pos)
    atoms.calc = LrnnCalculator(pot)
    assert atoms.get_potential_energy() == pytest.approx(e, abs=1e-3)
    assert md.MDSystem(pot, pos, num).total_energy(jnp.asarray(pos)) == pytest.approx(e, abs=1e-3)
    ase.io.write(tmp_path / "start.xyz", atoms)
    assert md_main([str(checkpoint), str(tmp_path / "start.xyz"), "--steps", "20", "--dt", "0.25",
                    "--temperature", "100", "--log-every", "5", "--output", str(tmp_path / "md"),
                    "--log", str(tmp_path / "e.csv"), "--no-progress"]) == 0
    rows = np.genfromtxt(tmp_path / "e.csv", delimiter=",", names=True)
    assert len(rows) == 5 and rows["epot_eV"][0] == pytest.approx(e, abs=1e-3)
    assert np.ptp(rows["etot_eV"]) < 0.05 * np.ptp(rows["epot_eV"]) + 1e-3


@pytest.mark.slow
def test_ase_calculator_jax_md_and_md_command(trained_mace, paracetamol, tmp_path):
    check_ase_jax_md_and_md_command(trained_mace[0], paracetamol, tmp_path)


def test_bad_configs():
    with pytest.raises(ValueError, match="grid"):
        models.model_config(dict(TINY_MACE, type_map=[1], grid=[4.0, 2]))
    with pytest.raises(ValueError, match="hidden_l"):
        models.model_config(dict(TINY_MACE, type_map=[1], l_max=1, hidden_l=2))
    with pytest.raises(ValueError, match="unknown option"):
        models.model_config(dict(TINY_MACE, type_map=[1], chanels=3))
