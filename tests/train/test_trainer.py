"""Training: resume equals an uninterrupted run; metrics, plots, checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest

import lrnn
from lrnn import checkpoint as ckpt
from lrnn.train import load_config, train
from lrnn.train.data import load_data
from lrnn.train.trainer import read_metrics


def test_training_writes_checkpoints_metrics_plot(trained_checkpoint):
    out = trained_checkpoint.parent
    assert (out / "checkpoint" / "lrnn.json").exists() and (out / "last" / "train_state").exists()
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) >= 2 and rows[-1]["step"] == 40
    assert (out / "learning_curve.png").stat().st_size > 1000
    meta = ckpt.read_meta(trained_checkpoint)
    assert meta["units"]["energy"] == "eV" and meta["energy_shift_refit"]


def test_snapshot_is_the_best_model_so_far_with_its_shift_refitted(trained_checkpoint, tiny_config):
    """``snapshot_at_s``: the best checkpoint at the first validation after T s, with the
    per-element shift re-fitted on the training set, so its mean training residual is zero
    (paracetamol: one composition, so the least-squares shift centres the residuals)."""
    snap = trained_checkpoint.parent / "checkpoint_at_1e-06s"
    meta = ckpt.read_meta(snap)
    assert meta["train"]["snapshot_at_s"] == 1e-6 and meta["energy_shift_refit"]
    rows = read_metrics(trained_checkpoint.parent / "metrics.csv")
    assert meta["train"]["step"] == rows[0]["step"] < rows[-1]["step"]  # taken at the first validation
    train_ds = load_data(tiny_config()["data"])["train"]
    e, _, _ = lrnn.load(snap).predict(train_ds)
    resid = train_ds.energy - e
    assert abs(resid.mean()) < 1e-4 * np.abs(resid).mean() + 1e-6
    with pytest.raises(ValueError, match="snapshot_at_s"):
        load_config(tiny_config(snapshot_at_s=[0.0]))


def test_resume_equals_uninterrupted_run(tiny_config, tmp_path):
    full = load_config(tiny_config(tmp_path / "full", max_steps=40))
    train(full, quiet=True)
    part = load_config(tiny_config(tmp_path / "part", max_steps=40, max_epochs=2))
    train(part, quiet=True)
    assert json.loads((tmp_path / "part" / "train_summary.json").read_text())["steps"] == 20
    rest = load_config(tiny_config(tmp_path / "part", max_steps=40))
    train(rest, resume=True, quiet=True)
    _, a, ts_a = ckpt.load(tmp_path / "full" / "last", with_train_state=True)
    _, b, ts_b = ckpt.load(tmp_path / "part" / "last", with_train_state=True)
    for x, y in zip(a + ts_a, b + ts_b):
        np.testing.assert_array_equal(x, y)
    rows = read_metrics(tmp_path / "part" / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in read_metrics(tmp_path / "full" / "metrics.csv")]


def test_select_last_keeps_the_final_weights_and_val_every_steps(tiny_config, tmp_path):
    """``select: last``: the checkpoint holds the weights of the last step (those of ``last``),
    even where the default (``best``) keeps an earlier epoch: a constant learning rate of 0.05
    makes the validation score of the 4 epochs non-monotonic here; bad values raise.  The
    ``last`` run also validates less often: ``val_every_steps: 15`` with 10-step epochs
    validates after the epochs that reach steps 15 and 30 (steps 20 and 30) and after the last (40)."""
    runs = {}
    for sel, every in (("best", 0), ("last", 15)):
        train(load_config(tiny_config(tmp_path / sel, lr_start=0.05, lr_stop=0.05, select=sel,
                                      val_every_steps=every)), quiet=True)
        runs[sel] = ckpt.load(tmp_path / sel / "checkpoint")[:2]
        _, final, _ = ckpt.load(tmp_path / sel / "last", with_train_state=True)
    assert runs["best"][0]["train"]["step"] < 40 == runs["last"][0]["train"]["step"]
    for x, y in zip(final, runs["last"][1]):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(final, runs["best"][1]))
    assert [r["step"] for r in read_metrics(tmp_path / "last" / "metrics.csv")] == [20, 30, 40]
    assert [r["step"] for r in read_metrics(tmp_path / "best" / "metrics.csv")] == [10, 20, 30, 40]
    with pytest.raises(ValueError, match="select"):
        load_config(tiny_config(select="first"))
    with pytest.raises(ValueError, match="val_every_steps"):
        load_config(tiny_config(val_every_steps=-1))


def test_missing_forces_with_force_weight(tiny_config, tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k in range(12):
        a = Atoms("H2O", positions=[[0, 0, 0], [0.96 + 0.01 * k, 0, 0], [-0.24, 0.93, 0]])
        a.calc = SinglePointCalculator(a, energy=-2.0 + 0.01 * k)
        frames.append(a)
    write(tmp_path / "noforces.extxyz", frames)
    cfg = tiny_config(tmp_path / "out")
    cfg["data"] = {"train": str(tmp_path / "noforces.extxyz"), "n_train": 10, "n_val": 2}
    with pytest.raises(ValueError, match="no force labels but the force weight is non-zero"):
        train(load_config(cfg), quiet=True)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown train option"):
        load_config({"data": {"train": "embedded:paracetamol"}, "train": {"learning_rate": 1}})
    with pytest.raises(ValueError, match="data.train"):
        load_config({"data": {}})
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_empty_training_set(tiny_config, tmp_path):
    np.savez(tmp_path / "empty.npz", R=np.zeros((0, 3, 3)), z=np.array([1, 1, 8]), E=np.zeros(0),
             F=np.zeros((0, 3, 3)))
    cfg = tiny_config(tmp_path / "out")
    cfg["data"] = {"train": str(tmp_path / "empty.npz"), "n_val": 1}
    with pytest.raises(ValueError, match="empty"):
        train(load_config(cfg), quiet=True)


def test_crash_during_save_keeps_last_good_checkpoint(trained_checkpoint, tmp_path, monkeypatch):
    import shutil

    dst = tmp_path / "ck"
    shutil.copytree(trained_checkpoint, dst)
    meta, leaves, _ = ckpt.load(dst)

    def boom(path, leaves):
        Path(path).mkdir(parents=True)
        (Path(path) / "partial").write_bytes(b"xx")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt, "_orbax_save", boom)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(dst, meta=meta, params=[x * 0 for x in leaves])
    _, again, _ = ckpt.load(dst)  # the old checkpoint is intact
    for x, y in zip(leaves, again):
        np.testing.assert_array_equal(x, y)


def test_warm_start_needs_the_same_model(tiny_config, trained_checkpoint, tmp_path):
    cfg = tiny_config(out=tmp_path / "warm", init_from=str(trained_checkpoint))
    cfg["model"]["rcut"] = 3.5
    with pytest.raises(ValueError, match=r"init_from .*differs in \['rcut'\]"):
        train(load_config(cfg), quiet=True)
    cfg = tiny_config(out=tmp_path / "warm2", init_from=str(trained_checkpoint), committee=2)
    with pytest.raises(ValueError, match="a committee of 1, this run trains 2"):
        train(load_config(cfg), quiet=True)


def test_energy_only_training_skips_forces_and_matches_the_force_path(tiny_config, tmp_path):
    """With no force, virial or charge weight the loss is built from E alone (no position
    gradient); the parameters it trains equal those of the force path whose force weight is
    negligible (1e-30), step by step, and they do move away from the initial ones."""
    prefs = {"pref_e_start": 1.0, "pref_e_limit": 1.0, "pref_v_start": 0.0, "pref_v_limit": 0.0}
    runs = {}
    for name, pf in (("energy_only", 0.0), ("force_path", 1e-30)):
        cfg = load_config(tiny_config(tmp_path / name, max_steps=12, pref_f_start=pf, pref_f_limit=pf, **prefs))
        assert cfg["train"].uses_forces == (pf > 0)
        train(cfg, quiet=True)
        runs[name] = ckpt.load(tmp_path / name / "last")[1]
    assert len(runs["energy_only"]) == len(runs["force_path"]) > 0
    for a, b in zip(runs["energy_only"], runs["force_path"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    cfg0 = load_config(tiny_config(tmp_path / "zero", max_steps=1, lr_start=1e-12, lr_stop=1e-13, **prefs,
                                   pref_f_start=0.0, pref_f_limit=0.0))
    train(cfg0, quiet=True)
    moved = 0.0
    for a, b in zip(runs["energy_only"], ckpt.load(tmp_path / "zero" / "last")[1]):
        moved = max(moved, float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float)))))
    assert moved > 1e-3


def test_ema_weights_follow_the_warm_up_average(tiny_config, tmp_path):
    """``ema_decay: 0.99``: after one step the validated and kept weights are
    d_0 w_0 + (1 - d_0) w_1 with MACE's warm-up d_0 = min(0.99, 1/10) = 0.1; w_0 are the
    initial weights (those of a run whose learning rate is 1e-12) and w_1 the raw weights
    that ``last`` keeps for the optimiser."""
    one = {"batch_size": 40, "max_steps": 1, "select": "last"}  # 40 training structures: one step
    train(load_config(tiny_config(tmp_path / "ema", ema_decay=0.99, **one)), quiet=True)
    train(load_config(tiny_config(tmp_path / "w0", lr_start=1e-12, lr_stop=1e-12, **one)), quiet=True)
    w0 = [np.asarray(x, float) for x in ckpt.load(tmp_path / "w0" / "last")[1]]
    w1 = [np.asarray(x, float) for x in ckpt.load(tmp_path / "ema" / "last")[1]]
    kept = ckpt.load(tmp_path / "ema" / "checkpoint")[1]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w0, w1)) > 1e-4  # the step moved the weights
    for a, b, k in zip(w0, w1, kept):
        np.testing.assert_allclose(np.asarray(k, float), 0.1 * a + 0.9 * b, rtol=1e-5, atol=1e-7)
    for bad in ({"ema_decay": 1.0}, {"stage2_from": 0.5}, {"stage2_from": 1.0, "stage2_pref_e": 1.0}):
        with pytest.raises(ValueError, match="ema_decay|stage2"):
            load_config(tiny_config(**bad))


def test_stage_two_switches_the_loss_weights_and_resumes_exactly(tiny_config, tmp_path):
    """``stage2_from: 0.5`` of 40 steps: the metrics log the schedule's prefactors after
    step 10 and the constant stage-2 ones once half the budget has passed (steps 20-40);
    the weights equal those of a run without the second stage until then and differ after.
    A run with a moving average interrupted after 2 epochs and resumed equals the
    uninterrupted one, average included; resuming a run without one under ema_decay raises."""
    two = {"ema_decay": 0.9, "stage2_from": 0.5, "stage2_pref_e": 7.0, "stage2_pref_f": 3.0}
    train(load_config(tiny_config(tmp_path / "full", **two)), quiet=True)
    train(load_config(tiny_config(tmp_path / "part", max_epochs=2, **two)), quiet=True)
    train(load_config(tiny_config(tmp_path / "part", **two)), resume=True, quiet=True)
    _, a, ts_a = ckpt.load(tmp_path / "full" / "last", with_train_state=True)
    _, b, ts_b = ckpt.load(tmp_path / "part" / "last", with_train_state=True)
    assert len(ts_a) > len(a)  # optimiser state and moving average
    for x, y in zip(a + ts_a, b + ts_b):
        np.testing.assert_array_equal(x, y)
    rows = read_metrics(tmp_path / "full" / "metrics.csv")
    assert [(r["pref_e"], r["pref_f"]) for r in rows[1:]] == [(7.0, 3.0)] * 3 and rows[0]["pref_f"] > 100
    train(load_config(tiny_config(tmp_path / "one_stage", ema_decay=0.9)), quiet=True)
    ref = read_metrics(tmp_path / "one_stage" / "metrics.csv")
    assert rows[0]["val_force_mae_eV_per_A"] == ref[0]["val_force_mae_eV_per_A"]
    assert rows[-1]["val_force_mae_eV_per_A"] != ref[-1]["val_force_mae_eV_per_A"]
    train(load_config(tiny_config(tmp_path / "plain", max_epochs=2)), quiet=True)
    with pytest.raises(ValueError, match="holds no moving average"):
        train(load_config(tiny_config(tmp_path / "plain", ema_decay=0.9)), resume=True, quiet=True)


def test_yaml_numbers_without_a_dot_are_read_as_numbers(tiny_config, tmp_path):
    """PyYAML reads ``1e-4`` (no dot) as a string: the run config takes it as the number
    it means; a value that is no number raises naming the option."""
    p = tmp_path / "run.yaml"
    p.write_text("data: {train: 'embedded:paracetamol'}\ntrain: {lr_start: 1e-3, lr_stop: 1e-4, max_steps: 2e3}\n")
    tc = load_config(p)["train"]
    assert (tc.lr_start, tc.lr_stop, tc.max_steps) == (1e-3, 1e-4, 2000) and isinstance(tc.max_steps, int)
    p.write_text("data: {train: 'embedded:paracetamol'}\ntrain: {lr_stop: fast}\n")
    with pytest.raises(ValueError, match="train.lr_stop must be a number, got 'fast'"):
        load_config(p)
