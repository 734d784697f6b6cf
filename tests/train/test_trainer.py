"""Training: resume equals an uninterrupted run; metrics, plots, checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest

from lrnn import checkpoint as ckpt
from lrnn.train import load_config, train
from lrnn.train.trainer import read_metrics


def test_training_writes_checkpoints_metrics_plot(trained_checkpoint):
    out = trained_checkpoint.parent
    assert (out / "checkpoint" / "lrnn.json").exists() and (out / "last" / "train_state").exists()
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) >= 2 and rows[-1]["step"] == 40
    assert (out / "learning_curve.png").stat().st_size > 1000
    meta = ckpt.read_meta(trained_checkpoint)
    assert meta["units"]["energy"] == "eV" and meta["energy_shift_refit"]


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
