"""experiments/bench_local_models.py without DeePMD-kit: the DeePMD npy systems it writes hold
the same structures in eV and Å, its input.json describes the same model as lrnn's config, and
the selection score and errors follow their definitions."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lrnn.system import Dataset
from lrnn.units import KCAL_MOL

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("blm", ROOT / "experiments/bench_local_models.py")
blm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(blm)


def toy(n=6, seed=0):
    rng = np.random.default_rng(seed)
    numbers = np.tile([8, 1, 1, 6], (n, 1))
    pos = rng.normal(size=(n, 4, 3))
    return Dataset(pos, numbers, rng.normal(size=n) - 100.0, forces=rng.normal(size=(n, 4, 3)))


def test_npy_system_and_input_match_lrnn(tmp_path):
    ds = toy()
    blm.write_deepmd_npy(ds, tmp_path / "train", [1, 6, 8])
    s = tmp_path / "train"
    assert (s / "type.raw").read_text().split() == ["2", "0", "0", "1"]
    assert (s / "type_map.raw").read_text().split() == ["H", "C", "O"] and (s / "nopbc").exists()
    np.testing.assert_array_equal(np.load(s / "set.000/coord.npy").reshape(6, 4, 3), ds.positions)
    np.testing.assert_array_equal(np.load(s / "set.000/energy.npy"), ds.energy)
    np.testing.assert_array_equal(np.load(s / "set.000/force.npy").reshape(6, 4, 3), ds.forces)
    inp = blm.deepmd_input([1, 6, 8], 1000, 0, 100, 100, tmp_path, 2)
    d, f = inp["model"]["descriptor"], inp["model"]["fitting_net"]
    assert d["sel"] == [4, 4, 4]  # ≥ the atoms of each species, in multiples of 4
    assert (d["rcut"], d["rcut_smth"], d["neuron"], d["axis_neuron"]) == (
        blm.MODEL["rcut"], blm.MODEL["rcut_smth"], blm.MODEL["embed"], blm.MODEL["axis_neurons"])
    assert f["neuron"] == blm.MODEL["fit"] and d["precision"] == f["precision"] == "float32"
    assert not d["type_one_side"] and not d["resnet_dt"] and not f["resnet_dt"]
    assert inp["loss"]["start_pref_f"] == blm.TRAIN["pref_f_start"] and inp["training"]["numb_steps"] == 1000


def test_score_and_errors():
    ds = toy()
    e, f = ds.energy + 0.5, ds.forces.copy()  # a constant offset is not penalised by the selection score
    assert blm.score(e, f, ds) == 0.0
    f[0, 0, 0] += 0.3
    assert np.isclose(blm.score(e, f, ds), 0.09 / f[ds.mask].size)
    err = blm.errors(e, f, ds)
    assert np.isclose(err["energy_mae_kcal_mol"], 0.5 / KCAL_MOL)
    assert np.isclose(err["force_mae_kcal_mol_A"], 0.3 / f[ds.mask].size / KCAL_MOL)


def test_val_curves_from_run_dirs(tmp_path, monkeypatch):
    """The learning curves are read back from both codes' run directories: DeePMD-kit's checkpoint
    times from its log's timestamps (seconds since step 1), its errors from the saved validation
    predictions, lrnn's from metrics.csv; all in minutes and kcal/mol(/Å)."""
    monkeypatch.setattr(blm, "RUNS", tmp_path)
    val = toy()
    run, out = blm.run_dirs("toy", 60.0, 0)
    (run / "pred_val").mkdir(parents=True)
    out.mkdir(parents=True)
    (run / "train.log").write_text(
        "[2026-12-02 14:29:13,500] DEEPMD INFO    Batch       1: total wall time = 1.39 s\n"
        "[2026-12-02 14:29:14,000] DEEPMD INFO    some other line\n"
        "[2026-12-02 14:31:13,500] DEEPMD INFO    Batch     900: total wall time = 52.87 s, eta = 0:52:05\n"
        "[2026-12-02 14:31:13,600] DEEPMD INFO    Saved model to model.ckpt-900.pt\n"
        "[2026-12-02 14:32:13,500] DEEPMD INFO    Saved model to model.ckpt-950.pt\n")
    assert blm.dp_log_times(run) == pytest.approx({1: 0.0, 900: 120.1, 950: 180.0})  # saved: the later time
    f = val.forces.copy()
    f[0, 0, 0] += 0.3
    np.savez(run / "pred_val" / "model.ckpt-900.npz", energy=val.energy + 0.5, forces=f)
    (out / "metrics.csv").write_text("step,time_s,val_energy_mae_eV,val_force_mae_eV_per_A\n"
                                     "10,30.0,0.1,0.2\n20,90.0,0.05,0.1\n")
    rec = {"molecule": "toy", "minutes": 60.0, "seed": 0, "lrnn": {}, "deepmd": {}}
    blm.add_val_curves(rec, val)
    (t, e, fm), = rec["deepmd"]["val_curve"]
    assert np.isclose(t, 120.1 / 60) and np.isclose(e, 0.5 / KCAL_MOL)
    assert np.isclose(fm, 0.3 / f[val.mask].size / KCAL_MOL)
    np.testing.assert_allclose(rec["lrnn"]["val_curve"], [[0.5, 0.1 / KCAL_MOL, 0.2 / KCAL_MOL],
                                                         [1.5, 0.05 / KCAL_MOL, 0.1 / KCAL_MOL]])
    monkeypatch.setattr(blm, "CURVE_POINTS", 2)  # evenly spaced validations, first and last kept
    (out / "metrics.csv").write_text("step,time_s,val_energy_mae_eV,val_force_mae_eV_per_A\n" +
                                     "".join(f"{k},{60.0 * k},0.1,0.2\n" for k in range(1, 6)))
    blm.add_val_curves(rec, val)
    assert [c[0] for c in rec["lrnn"]["val_curve"]] == [1.0, 5.0]
    (out / "metrics.csv").unlink()
    with pytest.raises(SystemExit, match="metrics.csv"):
        blm.add_val_curves(rec, val)


def test_other_models_table_lists_each_snapshot(tmp_path, monkeypatch):
    """The last table of peer.md: one row per snapshot of each timed run made with --snapshots,
    its speed = steps / training time; runs without snapshots are left out."""
    monkeypatch.setattr(blm, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    base = {"model": {"type": "eann"}, "cores": [1], "train_summary": {"steps": 600, "train_time_s": 120.0},
            "load_avg_before": [0.5, 0, 0], "load_avg_after": [2.0, 0, 0], "date": "d"}
    at = {"60": {"energy_mae": 0.25, "force_mae": 0.6}, "20": {"energy_mae": 0.5, "force_mae": 0.9}}
    (tmp_path / "results" / "timed_a.json").write_text(blm.json.dumps({**base, "name": "a", "at": at}))
    (tmp_path / "results" / "timed_b.json").write_text(blm.json.dumps({**base, "name": "b"}))
    rows = [r for r in blm.other_models_table() if r.startswith("| a ")]
    assert rows == ["| a (eann, 1 core) | 1 | 20 | 0.500 / 0.900 | 5.0 | 0.5 / 2.0 | d |",
                    "| a (eann, 1 core) | 1 | 60 | 0.250 / 0.600 | 5.0 | 0.5 / 2.0 | d |"]
    assert not any(r.startswith("| b ") for r in blm.other_models_table())


def test_other_models_table_has_a_section_per_molecule(tmp_path, monkeypatch):
    """A timed run with ``molecule: paracetamol`` lands under its own heading, never in aspirin's;
    a record without ``molecule`` (the older ones) is aspirin's."""
    monkeypatch.setattr(blm, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    base = {"model": {"type": "mace"}, "cores": [0], "train_summary": {"steps": 100, "train_time_s": 10.0},
            "load_avg_before": [0, 0, 0], "load_avg_after": [0, 0, 0], "date": "d",
            "at": {"20": {"energy_mae": 0.1, "force_mae": 0.2}}}
    (tmp_path / "results" / "timed_old.json").write_text(blm.json.dumps({**base, "name": "old"}))
    (tmp_path / "results" / "timed_p.json").write_text(blm.json.dumps({**base, "name": "p", "molecule": "paracetamol"}))
    text = "\n".join(blm.other_models_table())
    asp, para = text.split("## The other local models, paracetamol")
    assert "## The other local models, aspirin" in asp and "| old (mace" in asp and "| p (" not in asp
    assert "| p (mace, 1 core) | 0 | 20 | 0.100 / 0.200 |" in para and "| old (" not in para
