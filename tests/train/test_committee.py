"""Committees (train.committee: K): trained as one vmap, each member as if trained alone."""

from pathlib import Path

import jax
import numpy as np
import pytest

import lrnn
from lrnn import bundle
from lrnn import checkpoint as ckpt
from lrnn.data import read
from lrnn.train import load_config, train
from lrnn.train.data import resolve_path


@pytest.fixture(scope="module")
def runs(tiny_config, tmp_path_factory):
    """A committee of 2 (seeds 5, 6), the single model of seed 5, the single model with
    2 restarts (copies of seeds 5, 6), and the committee of 2 trained with its force NLL."""
    root = tmp_path_factory.mktemp("committee")
    out = {}
    for name, extra in (("committee", {"seed": 5, "committee": 2}), ("seed5", {"seed": 5}),
                        ("restarts", {"seed": 5, "restarts": 2}),
                        ("nll", {"seed": 5, "committee": 2, "committee_nll": 1.0})):
        cfg = load_config(tiny_config(root / name, max_steps=20, **extra))
        train(cfg, quiet=True)
        out[name] = Path(cfg["output"]) / "checkpoint"
    return out


def test_members_equal_models_trained_alone(runs):
    """The committee's objective is the sum of its members' losses and Adam is elementwise,
    so member 0 (seed 5) follows the single seed-5 run (same batches) to float32 rounding;
    member 1 starts from seed 6 (it shares the batch order of seed 5)."""
    ds = read(resolve_path("embedded:paracetamol-test"))
    members = lrnn.load(runs["committee"]).predict_members(ds)
    assert members[0].shape == (2, len(ds))
    e, f, _ = lrnn.load(runs["seed5"]).predict(ds)
    np.testing.assert_allclose(members[0][0], e, atol=1e-4)  # eV, on energies of ~1.4e4 eV
    np.testing.assert_allclose(members[1][0], f, atol=1e-5)  # eV/Å
    assert np.abs(members[1][0] - members[1][1]).max() > 1e-2  # the members differ


def test_committee_checkpoint_spread_and_calibration(runs):
    meta = ckpt.read_meta(runs["committee"])
    assert meta["committee"] == 2 and len(meta["train"]["best_val"]) == 2
    assert np.shape(meta["energy_shift"]) == (2, len(meta["model"]["type_map"]))
    assert meta["calibration"]["force_std_scale"] > 0 and meta["calibration"]["fitted_on"] == "validation"
    pot = lrnn.load(runs["committee"])
    ds = read(resolve_path("embedded:paracetamol-test"))
    n = int(ds.n_atoms[0])
    r = pot.calculate(ds.positions[0][:n], ds.numbers[0][:n])
    # an independent evaluation of each member through the bundle
    model, params = bundle.load(runs["committee"])
    system, nbrs = bundle.prepare(model, ds.positions[0][:n], ds.numbers[0][:n])
    res = jax.vmap(bundle.energy_forces_virial, in_axes=(None, bundle.MEMBER_AXES, None, None))(
        model, params, system, nbrs)
    e_k = np.asarray(res.model_energy, np.float64) + bundle.reference_energy(params, np.asarray(system.species))
    f_k = np.asarray(res.forces, np.float64)
    assert r["energy"] == pytest.approx(e_k.mean(), abs=1e-3)
    np.testing.assert_allclose(r["forces"], f_k.mean(0), atol=1e-4)
    assert r["energy_std"] == pytest.approx(e_k.std(), abs=1e-3)
    dev = np.linalg.norm(f_k - f_k.mean(0), axis=-1)  # (K, N): per-member deviation per atom
    np.testing.assert_allclose(r["forces_std"], np.sqrt((dev**2).mean(0)), atol=1e-4)
    assert r["model_deviation"] == pytest.approx(r["forces_std"].max())


def test_validation_spearman_recorded_with_the_calibration(runs, tiny_config):
    """The checkpoint's validation force Spearman and MAE equal an independent evaluation
    of the committee on the validation split (lrnn.load, lrnn.uncertainty)."""
    from lrnn import uncertainty
    from lrnn.train.data import load_data

    cal = ckpt.read_meta(runs["committee"])["calibration"]
    val = load_data(tiny_config()["data"])["val"]
    members = lrnn.load(runs["committee"]).predict_members(val)
    f_k = np.asarray(members[1], np.float64)  # (K, M, N, 3)
    res = uncertainty.committee_metrics(f_k, val.forces, val.mask)
    assert cal["validation_force_spearman"] == pytest.approx(res["force_spearman"], abs=1e-6)
    err = (f_k.mean(0) - val.forces)[val.mask]
    assert cal["validation_force_mae_eV_A"] == pytest.approx(np.abs(err).mean(), rel=1e-3)


def test_restarts_keep_the_copy_best_on_validation(runs):
    """train.restarts: 2 trains the copies of seeds 5 and 6 as the committee does and keeps
    the one with the better validation score: its predictions are that member's."""
    committee, kept = ckpt.read_meta(runs["committee"]), ckpt.read_meta(runs["restarts"])
    scores = committee["train"]["best_val"]
    assert "committee" not in kept and np.ravel(kept["restarts"]["val_scores"]).tolist() == pytest.approx(scores)
    best = int(np.argmin(scores))
    assert kept["restarts"]["kept_seeds"] == [5 + best]
    ds = read(resolve_path("embedded:paracetamol-test"))
    e_k, f_k, _ = lrnn.load(runs["committee"]).predict_members(ds)
    e, f, _ = lrnn.load(runs["restarts"]).predict(ds)
    np.testing.assert_allclose(e, e_k[best], atol=1e-4)  # eV
    np.testing.assert_allclose(f, f_k[best], atol=1e-5)  # eV/Å
    with pytest.raises(ValueError, match="restarts must be an integer >= 1"):
        load_config({"data": {"train": "x"}, "model": {}, "train": {"restarts": 0}, "output": "o"})


def test_ase_calculator_reports_the_spread(runs):
    from ase import Atoms

    from lrnn.ase_calculator import LrnnCalculator

    ds = read(resolve_path("embedded:paracetamol-test"))
    n = int(ds.n_atoms[0])
    atoms = Atoms(numbers=ds.numbers[0][:n], positions=ds.positions[0][:n])
    atoms.calc = LrnnCalculator(runs["committee"])
    atoms.get_potential_energy()
    assert atoms.calc.results["forces_std"].shape == (n,) and atoms.calc.results["energy_std"] > 0


def test_committee_size_is_validated(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="committee must be an integer >= 1"):
        load_config(tiny_config(tmp_path, committee=0))
    cfg = tiny_config(tmp_path, committee=2)
    cfg["model"]["long_range"] = [{"type": "sog", "method": "hierarchical", "fit": [4]}]
    with pytest.raises(ValueError, match="hierarchical SOG term is not supported"):
        train(load_config(cfg), quiet=True)


def test_evaluate_reports_calibration(runs, tmp_path, capsys):
    from lrnn.cli import main

    assert main(["evaluate", str(runs["committee"]), "embedded:paracetamol-test", "--json",
                 "--calibration", str(tmp_path / "cal.png")]) == 0
    import json

    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["committee"] == 2 and -1 <= res["force_spearman"] <= 1
    assert 0 <= res["miscalibration_area"] <= 0.5 and np.isfinite(res["nll_recalibrated"])
    assert (tmp_path / "cal.png").stat().st_size > 1000


def test_jax_md_energy_of_a_committee_is_the_mean(runs):
    from lrnn.md import MDSystem

    pot = lrnn.load(runs["committee"])
    ds = read(resolve_path("embedded:paracetamol-test"))
    n = int(ds.n_atoms[0])
    system = MDSystem(pot, ds.positions[0][:n], ds.numbers[0][:n])
    r = pot.calculate(ds.positions[0][:n], ds.numbers[0][:n], precision="float64")
    assert system.total_energy(ds.positions[0][:n]) == pytest.approx(r["energy"], abs=1e-6)


def test_md_watchdog_stops_outside_the_data(runs, tmp_path, capsys):
    """A committee run heated far beyond its data stops cleanly at the first logged frame
    whose model deviation exceeds --max-deviation; the last good frame is kept."""
    from ase import Atoms
    from ase.io import read as ase_read
    from ase.io import write as ase_write

    from lrnn.md_cli import main as md_main

    ds = read(resolve_path("embedded:paracetamol-test"))
    n = int(ds.n_atoms[0])
    start = tmp_path / "start.xyz"
    ase_write(start, Atoms(numbers=ds.numbers[0][:n], positions=ds.positions[0][:n]))
    d0 = lrnn.load(runs["committee"]).calculate(ds.positions[0][:n], ds.numbers[0][:n])["model_deviation"]
    out = tmp_path / "md"
    code = md_main([str(runs["committee"]), str(start), "--committee", "--max-deviation", f"{1.05 * d0}",
                    "--ensemble", "nvt", "--temperature", "5000", "--friction", "0.05", "--steps", "2000",
                    "--log-every", "10", "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "model deviation" in err and "exceeds --max-deviation" in err
    rows = np.genfromtxt(out / "log.csv", delimiter=",", names=True)
    dev = rows["model_deviation_eV_per_A"]
    assert dev[-1] > 1.05 * d0 and np.all(dev[:-1] <= 1.05 * d0)  # stopped at the first frame beyond X
    good = ase_read(out / "trajectory.last_good.extxyz")
    assert good.info["time_fs"] == pytest.approx(rows["time_fs"][-2])
    assert len(rows) < 201  # before the 2000 steps


def test_md_watchdog_needs_a_committee(trained_checkpoint, tmp_path, capsys):
    from ase import Atoms
    from ase.io import write as ase_write

    from lrnn.md_cli import main as md_main

    ase_write(tmp_path / "s.xyz", Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    assert md_main([str(trained_checkpoint), str(tmp_path / "s.xyz"), "--max-deviation", "0.2", "--steps", "10",
                    "--output", str(tmp_path / "md"), "--no-progress"]) == 2
    assert "not a committee" in capsys.readouterr().err


def test_weighted_loss_is_the_loss_of_the_real_structures():
    """Weight-0 structures (device padding, other members' subsets) leave every loss term
    equal to the plain loss over the remaining structures."""
    import jax.numpy as jnp

    from lrnn.train.trainer import loss_terms

    rng = np.random.default_rng(0)
    b, n = 5, 4
    pred = (rng.normal(size=b), rng.normal(size=(b, n, 3)), rng.normal(size=(b, 3, 3)))
    mask = np.ones((b, n), bool)
    mask[1, -1] = False
    labels = {"energy": rng.normal(size=b), "forces": rng.normal(size=(b, n, 3)), "virial": rng.normal(size=(b, 3, 3)),
              "n_atoms": mask.sum(1).astype(float), "mask": mask, "has_forces": np.ones(b, bool),
              "has_virial": np.array([1, 1, 0, 1, 1], bool), "has_charges": np.zeros(b, bool)}
    keep = np.array([0, 1, 3])
    w = np.zeros(b)
    w[keep] = 1.0
    weighted = loss_terms(pred, dict(labels, weight=jnp.asarray(w)))
    plain = loss_terms(tuple(x[keep] for x in pred), {k: v[keep] for k, v in labels.items()})
    np.testing.assert_allclose(np.asarray(weighted), np.asarray(plain), rtol=1e-6)
    zero = loss_terms(pred, dict(labels, weight=jnp.zeros(b)))  # a member with no structure in this batch
    assert np.all(np.isfinite(np.asarray(zero))) and float(np.sum(np.asarray(zero))) == 0.0


def test_committee_force_nll_against_a_direct_sum():
    """committee_force_nll equals the per-component Gaussian NLL summed by loops over the
    real atoms of weighted structures with forces, and its gradient moves the members about
    their mean (the member gradients sum to zero: the mean is left to the members' losses)."""
    import jax.numpy as jnp

    from lrnn.train.trainer import committee_force_nll

    rng = np.random.default_rng(3)
    k, b, n = 3, 4, 5
    f = rng.normal(size=(k, b, n, 3))
    mask = np.ones((b, n), bool)
    mask[2, 3:] = False
    labels = {"forces": rng.normal(size=(b, n, 3)), "mask": mask, "has_forces": np.array([1, 1, 1, 0], bool),
              "weight": np.array([1.0, 0.0, 1.0, 1.0])}
    eps, total, count = 1e-6, 0.0, 0
    for s_ in range(b):
        if not labels["has_forces"][s_] or labels["weight"][s_] == 0:
            continue
        for i in range(n):
            if not mask[s_, i]:
                continue
            for a in range(3):
                x = f[:, s_, i, a]
                var = np.mean((x - x.mean()) ** 2) + eps
                total += 0.5 * np.log(var) + (labels["forces"][s_, i, a] - x.mean()) ** 2 / (2 * var)
                count += 1
    got = committee_force_nll(jnp.asarray(f), jax.tree.map(jnp.asarray, labels), eps)
    assert float(got) == pytest.approx(total / count, rel=1e-6)
    g = jax.grad(lambda x: committee_force_nll(x, jax.tree.map(jnp.asarray, labels), eps))(jnp.asarray(f))
    assert np.abs(np.asarray(g)).max() > 1e-3
    np.testing.assert_allclose(np.asarray(g).sum(axis=0), 0.0, atol=1e-6)


def test_committee_nll_widens_a_spread_below_its_error(runs):
    """A young committee's spread is far below its error; the NLL term (weight 1) pushes the
    same members (seeds, batches, 20 steps; nothing else differs) apart on unseen structures."""
    ds = read(resolve_path("embedded:paracetamol-test"))
    plain = lrnn.load(runs["committee"]).predict_members(ds)[1]
    nll = lrnn.load(runs["nll"]).predict_members(ds)[1]
    err = np.abs(plain.mean(0) - ds.forces).mean()
    assert plain.std(0).mean() < 0.5 * err  # the premise
    assert nll.std(0).mean() > 1.15 * plain.std(0).mean()


def test_committee_nll_is_validated(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="committee_nll must be >= 0"):
        load_config(tiny_config(tmp_path, committee=2, committee_nll=-1))
    with pytest.raises(ValueError, match="committee_nll_floor must be > 0"):
        load_config(tiny_config(tmp_path, committee=2, committee_nll=0.1, committee_nll_floor=0))
    with pytest.raises(ValueError, match="needs a committee"):
        load_config(tiny_config(tmp_path, committee_nll=0.1))
    with pytest.raises(ValueError, match="needs force labels"):
        load_config(tiny_config(tmp_path, committee=2, committee_nll=0.1, pref_f_start=0, pref_f_limit=0))
