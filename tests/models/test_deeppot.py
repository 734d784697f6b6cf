"""DeepPot-SE physics: invariances, forces and virial against finite differences,
smoothness across r_cs and r_c, padding independence, periodic images."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lrnn import models
from lrnn.batch import make_inputs
from lrnn.models.deeppot import compute_stats, fit_energy_shift, fit_input_stats
from lrnn.neighbors import Capacity
from lrnn.nn import split
from lrnn.potential import energy_fn as _energy_fn
from lrnn.potential import energy_forces_virial as _efv
from lrnn.system import Dataset
from tests.conftest import TINY_MODEL

energy_fn = jax.jit(_energy_fn, static_argnums=0)
energy_forces_virial = jax.jit(_efv, static_argnums=0)


def build(type_map, model=None, seed=0):
    cfg = dict(model or TINY_MODEL, type_map=type_map)
    mod = models.create(cfg, seed=seed, dtype=jnp.float64)
    g, st = split(mod)
    _, mcfg = models.model_config(cfg)
    return g, st, mcfg


def inputs_for(mcfg, pos, numbers, cell=None, pbc=None, capacity=None):
    ds = Dataset(np.asarray(pos)[None], np.asarray(numbers)[None], [0.0],
                 cell=None if cell is None else np.asarray(cell)[None], pbc=pbc)
    inp, cap = make_inputs(ds, mcfg, capacity, dtype=np.float64)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), inp), cap


@pytest.fixture(scope="module")
def setup(paracetamol):
    g, st, mcfg = build([1, 6, 7, 8])
    sub = paracetamol.subset(np.arange(20))
    inp, _ = make_inputs(sub, mcfg, dtype=np.float64)
    stats = {k: jnp.asarray(v) for k, v in compute_stats(mcfg, sub.positions, sub.cell, inp.layout).items()}
    return g, st, mcfg, stats, paracetamol.positions[0], paracetamol.numbers[0]


def efv(setup, pos, numbers, **kw):
    g, st, mcfg, stats = setup[:4]
    inp, _ = inputs_for(mcfg, pos, numbers, **kw)
    return energy_forces_virial(g, st, stats, inp)


def test_translation_rotation_permutation_invariance(setup):
    pos, num = setup[4], setup[5]
    e0, f0, _ = efv(setup, pos, num)
    rot = Rotation.random(random_state=1).as_matrix()
    e1, f1, _ = efv(setup, pos @ rot.T + np.array([3.0, -7.0, 11.0]), num)
    assert float(e1) == pytest.approx(float(e0), abs=1e-10)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0) @ rot.T, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(num))
    e2, f2, _ = efv(setup, pos[perm], num[perm])
    assert float(e2) == pytest.approx(float(e0), abs=1e-10)
    np.testing.assert_allclose(np.asarray(f2), np.asarray(f0)[perm], atol=1e-10)


def test_forces_match_finite_differences(setup):
    g, st, mcfg, stats, pos, num = setup
    e0, f0, _ = efv(setup, pos, num)
    inp, _ = inputs_for(mcfg, pos, num)
    def e_of(p):
        return energy_fn(g, st, stats, replace(inp, positions=p))
    h = 1e-5
    for i, k in [(0, 0), (5, 1), (12, 2), (19, 0)]:
        dp = np.zeros_like(pos)
        dp[i, k] = h
        fd = -(float(e_of(jnp.asarray(pos + dp))) - float(e_of(jnp.asarray(pos - dp)))) / (2 * h)
        assert float(f0[i, k]) == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert np.abs(np.asarray(f0).sum(axis=0)).max() < 1e-10  # Newton's third law


def test_virial_matches_strain_finite_differences(setup):
    pos, num = setup[4], setup[5]
    _, f, w = efv(setup, pos, num)
    # free molecule: W = sum_i r_i (x) F_i
    np.testing.assert_allclose(np.asarray(w), np.asarray(pos).T @ np.asarray(f), atol=1e-9)
    g, st, mcfg, stats = setup[:4]
    inp, _ = inputs_for(mcfg, pos, num)
    h = 1e-6
    for a, b in [(0, 0), (0, 1), (2, 1)]:
        eps = np.zeros((3, 3))
        eps[a, b] = h
        ep = float(energy_fn(g, st, stats, replace(inp, positions=jnp.asarray(pos @ (np.eye(3) + eps).T))))
        em = float(energy_fn(g, st, stats, replace(inp, positions=jnp.asarray(pos @ (np.eye(3) - eps).T))))
        assert float(w[a, b]) == pytest.approx(-(ep - em) / (2 * h), rel=1e-5, abs=1e-8)


def periodic_box(seed=0, n=16, box=7.0):
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm((p - q + box / 2) % box - box / 2) > 1.2 for q in pos):
            pos.append(p)
    cell = np.array([[box, 0, 0], [0.3, box, 0], [0.0, 0.5, box]])
    frac = np.array(pos) / box
    return frac @ cell, np.array([8, 1] * (n // 2)), cell


def test_periodic_virial_and_supercell():
    g, st, mcfg = build([1, 8], dict(TINY_MODEL, rcut=5.0, neighbor_mode="cutoff"))
    pos, num, cell = periodic_box()
    stats = {"s_avg": jnp.full(2, 0.2), "s_std": jnp.full(2, 0.3), "dir_std": jnp.full(2, 0.2), "n_norm": 20.0}
    inp, _ = inputs_for(mcfg, pos, num, cell, [True] * 3)
    e, f, w = energy_forces_virial(g, st, stats, inp)
    h = 1e-6
    for a, b in [(0, 0), (1, 2), (2, 0)]:
        eps = np.zeros((3, 3))
        eps[a, b] = h
        def e_at(s):
            fm = np.eye(3) + s * eps
            i2, _ = inputs_for(mcfg, pos @ fm.T, num, cell @ fm.T, [True] * 3)
            return float(energy_fn(g, st, stats, i2))
        assert float(w[a, b]) == pytest.approx(-(e_at(1) - e_at(-1)) / (2 * h), rel=1e-5, abs=1e-8)
    # a 2x1x1 supercell has twice the energy and the same forces (periodic images right)
    pos2 = np.concatenate([pos, pos + cell[0]])
    cell2 = cell * np.array([[2], [1], [1]])
    inp2, _ = inputs_for(mcfg, pos2, np.concatenate([num, num]), cell2, [True] * 3)
    e2, f2, _ = energy_forces_virial(g, st, stats, inp2)
    assert float(e2) == pytest.approx(2 * float(e), rel=1e-10)
    np.testing.assert_allclose(np.asarray(f2)[: len(num)], np.asarray(f), atol=1e-10)
    # an atom wrapped across the cell boundary gives the same energy
    pos_w = pos.copy()
    pos_w[0] += cell[1]
    inp_w, _ = inputs_for(mcfg, pos_w, num, cell, [True] * 3)
    assert float(energy_fn(g, st, stats, inp_w)) == pytest.approx(float(e), rel=1e-12)


def test_energy_independent_of_padding_capacity(setup):
    g, st, mcfg, stats, pos, num = setup
    inp, cap = inputs_for(mcfg, pos, num)
    big = Capacity(tuple(c + 3 for c in cap.centres), cap.neighbors + 5)
    inp_big, _ = inputs_for(mcfg, pos, num, capacity=big)
    assert float(energy_fn(g, st, stats, inp_big)) == pytest.approx(float(energy_fn(g, st, stats, inp)), abs=1e-12)
    cut, _ = inputs_for(models.model_config(dict(TINY_MODEL, type_map=[1, 6, 7, 8], neighbor_mode="cutoff"))[1],
                        pos, num)
    assert float(energy_fn(g, st, stats, cut)) == pytest.approx(float(energy_fn(g, st, stats, inp)), abs=1e-12)


@pytest.mark.parametrize("radius", ["rcut", "rcut_smth"])
def test_forces_continuous_across_cutoffs(radius):
    """Move one H atom radially through r_cs and r_c of an O centre: the force on every
    atom changes by O(δ) across the boundary (no jump), in both neighbour modes."""
    g, st, mcfg = build([1, 8])
    stats = {"s_avg": jnp.full(2, 0.2), "s_std": jnp.full(2, 0.3), "dir_std": jnp.full(2, 0.2), "n_norm": 5.0}
    r0 = getattr(mcfg, radius)
    base = np.array([[0.0, 0, 0], [0.0, 0.97, 0.0], [0.9, -0.3, 0.0]])
    jumps = []
    for mode in ("all", "cutoff"):
        _, cfg = models.model_config(dict(TINY_MODEL, type_map=[1, 8], neighbor_mode=mode))
        forces = []
        for d in (r0 - 1e-7, r0 + 1e-7, r0 - 2e-7, r0 + 2e-7):
            pos = np.vstack([base, [[-d, 0.0, 0.0]]])
            inp, _ = inputs_for(cfg, pos, [8, 1, 1, 1])
            forces.append(np.asarray(energy_forces_virial(g, st, stats, inp)[1]))
        jump = np.abs(forces[1] - forces[0]).max()
        jumps.append(jump)
        assert jump < 1e-5, f"force jump {jump} eV/Å across {radius} ({mode})"
        # Lipschitz: doubling the step doubles the change at most (continuous, no step)
        assert np.abs(forces[3] - forces[2]).max() <= 2.5 * jump + 1e-9


def test_energy_shift_least_squares():
    numbers = np.array([[1, 1, 8], [1, 8, 0], [6, 1, 0]])
    e_t = np.array([-13.6, -1030.0, -2040.0])  # H, C, O
    energy = np.array([2 * e_t[0] + e_t[2], e_t[0] + e_t[2], e_t[1] + e_t[0]])
    np.testing.assert_allclose(fit_energy_shift(numbers, energy, [1, 6, 8]), e_t, rtol=1e-12)


def test_bad_model_configs():
    with pytest.raises(ValueError, match="rcut_smth < rcut"):
        models.model_config(dict(TINY_MODEL, type_map=[1], rcut_smth=5.0))
    with pytest.raises(ValueError, match="unknown option"):
        models.model_config(dict(TINY_MODEL, type_map=[1], cutof=3))
    with pytest.raises(ValueError, match="unknown model type"):
        models.model_config({"type": "schnet", "type_map": [1]})


def test_two_body_features_are_the_linear_neighbour_sum():
    """``two_body: true`` appends (1/N_c) Σ_j G(s_j) s_j / σ to D, checked against a direct
    sum over the neighbours with the model's own embedding nets; the model stays smooth
    and invariant, and its forces are the gradient."""
    from lrnn.descriptors.se_e2_a import smooth_switch

    cfg = dict(TINY_MODEL, type_map=[1, 8], two_body=True)
    mod = models.create(cfg, seed=0, dtype=jnp.float64)
    _, mcfg = models.model_config(cfg)
    stats = {"s_avg": jnp.array([0.2, 0.25]), "s_std": jnp.array([0.3, 0.35]), "dir_std": jnp.array([0.2, 0.25]),
             "n_norm": jnp.asarray(5.0)}
    pos = np.array([[0.0, 0, 0], [0.96, 0.1, 0.0], [-0.3, 0.9, 0.1], [2.6, 0.4, -0.5], [3.2, 1.0, -0.2]])
    num = np.array([8, 1, 1, 8, 1])
    inp, _ = inputs_for(mcfg, pos, num)
    desc = mod.descriptors(inp, stats)
    m1, width = TINY_MODEL["embed"][-1], TINY_MODEL["embed"][-1] * TINY_MODEL["axis_neurons"]
    t = 2
    for a, z in enumerate(mcfg.type_map):  # each species' first centre
        i = int(np.flatnonzero(num == z)[0])
        feat = np.asarray(desc[a][0][0, width:])
        ref = np.zeros(m1)
        for j in range(len(num)):
            r = np.linalg.norm(pos[j] - pos[i])
            if j == i or r >= mcfg.rcut:
                continue
            s = float(smooth_switch(r, mcfg.rcut_smth, mcfg.rcut)) / r
            b = mcfg.type_map.index(int(num[j]))
            x = jnp.asarray([[(s - float(stats["s_avg"][a])) / float(stats["s_std"][a])]])
            ref += np.asarray(mod.embedding(a * t + b, x))[0] * s / float(stats["s_std"][a])
        np.testing.assert_allclose(feat, ref / 5.0, rtol=1e-10, atol=1e-12)
    g, st = split(mod)
    e0, f0, _ = energy_forces_virial(g, st, stats, inp)
    rot = Rotation.random(random_state=3).as_matrix()
    e1, f1, _ = energy_forces_virial(g, st, stats, inputs_for(mcfg, pos @ rot.T + 1.0, num)[0])
    assert float(e1) == pytest.approx(float(e0), abs=1e-10)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0) @ rot.T, atol=1e-10)
    h = 1e-5
    for i, k in [(0, 0), (3, 2), (4, 1)]:
        dp = np.zeros_like(pos)
        dp[i, k] = h
        fd = -(float(energy_fn(g, st, stats, replace(inp, positions=jnp.asarray(pos + dp))))
               - float(energy_fn(g, st, stats, replace(inp, positions=jnp.asarray(pos - dp))))) / (2 * h)
        assert float(f0[i, k]) == pytest.approx(fd, rel=1e-6, abs=1e-8)
    with pytest.raises(ValueError, match="two_body"):
        models.model_config({"type": "eann", "type_map": [1], "two_body": True})


def test_chunked_descriptor_equals_the_whole(setup):
    """chunk_bytes small enough for 3 centres per chunk (lax.map + remat) gives the energy,
    forces and virial of the one-shot evaluation, periodic box with a latent-charge term."""
    model = dict(TINY_MODEL, rcut=5.0, neighbor_mode="cutoff", two_body=True,
                 long_range=[{"type": "latent_coulomb", "method": "reciprocal", "fit": [8]}])
    g, st, mcfg = build([1, 8], model)
    pos, num, cell = periodic_box(n=16)
    stats = {"s_avg": jnp.full(2, 0.2), "s_std": jnp.full(2, 0.3), "dir_std": jnp.full(2, 0.2), "n_norm": 20.0}
    inp, cap = inputs_for(mcfg, pos, num, cell, [True] * 3)
    per_centre_bytes = 2 * cap.neighbors * TINY_MODEL["embed"][-1] * 8  # T x S x M1 float64
    gc, stc, _ = build([1, 8], dict(model, chunk_bytes=3 * per_centre_bytes))
    assert max(cap.centres) > 3  # more than one chunk per species
    whole = energy_forces_virial(g, st, stats, inp)
    parts = energy_forces_virial(gc, stc, stats, inp)
    for a, b in zip(whole, parts):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)
    assert np.abs(np.asarray(whole[1])).max() > 1e-3  # non-trivial forces compared


def test_fit_norm_standardises_the_fitting_input(setup, paracetamol):
    """``fit_norm``: ``fit_input_stats`` gives the per-species mean and std of the initial
    descriptors (checked against NumPy over the same centres); the normalised model equals
    the plain one with the affine map folded into the first fitting layer (W' = W/σ,
    b' = b − (D̄/σ)·W), and its forces are the gradient (finite differences)."""
    g, st, mcfg, stats = setup[:4]
    cfg = dict(TINY_MODEL, type_map=list(mcfg.type_map), fit_norm=True)
    mod = models.create(cfg, seed=0, dtype=jnp.float64)
    sub = paracetamol.subset(np.arange(8))
    inp, _ = make_inputs(sub, models.model_config(cfg)[1], dtype=np.float64)
    with pytest.raises(ValueError, match="d_avg"):
        mod.energy(jax.tree.map(lambda x: jnp.asarray(x[0]), inp), stats)
    dstats = fit_input_stats(mod, inp, stats, batch=5)
    one = jax.jit(lambda x: mod.descriptors(x, stats))
    per = [one(jax.tree.map(lambda x: jnp.asarray(x[i]), inp)) for i in range(len(sub))]
    for a in range(len(mcfg.type_map)):
        d = np.concatenate([np.asarray(desc[a][0]) for desc in per])
        np.testing.assert_allclose(dstats["d_avg"][a], d.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dstats["d_std"][a], np.maximum(d.std(0), 1e-2 * np.abs(d).mean()), rtol=1e-10)
    full = dict(stats, **{k: jnp.asarray(v) for k, v in dstats.items()})
    g1, st1 = split(mod)
    plain = models.create(dict(cfg, fit_norm=False), seed=0, dtype=jnp.float64)
    w0, b0 = plain.fitting.w0[...], plain.fitting.b0[...]  # (T, D, H), (T, H)
    sd, mu = jnp.asarray(dstats["d_std"]), jnp.asarray(dstats["d_avg"])
    plain.fitting.w0[...] = w0 / sd[:, :, None]
    plain.fitting.b0[...] = b0 - jnp.einsum("td,tdh->th", mu / sd, w0)
    g0, st0 = split(plain)
    x = jax.tree.map(lambda v: jnp.asarray(v[3]), inp)
    e1, f1, _ = energy_forces_virial(g1, st1, full, x)
    e0, _, _ = energy_forces_virial(g0, st0, stats, x)
    assert float(e1) == pytest.approx(float(e0), rel=1e-10)
    h, pos = 1e-5, np.asarray(x.positions)
    for i, k in [(0, 0), (7, 2)]:
        dp = np.zeros_like(pos)
        dp[i, k] = h
        fd = -(float(energy_fn(g1, st1, full, replace(x, positions=jnp.asarray(pos + dp))))
               - float(energy_fn(g1, st1, full, replace(x, positions=jnp.asarray(pos - dp))))) / (2 * h)
        assert float(f1[i, k]) == pytest.approx(fd, rel=1e-6, abs=1e-8)
