"""experiments/local_models/timed_runs.py without training: the report lists every record
with its cores, load and test errors."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("timed_runs", ROOT / "experiments/local_models/timed_runs.py")
tr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tr)


def test_report_has_a_row_per_record(tmp_path, monkeypatch):
    monkeypatch.setattr(tr, "RESULTS", tmp_path)
    for name, e, f in (("a_10min", 1.2345, 2.5), ("b_10min", 0.5, 0.9876)):
        rec = {"name": name, "model": {"type": "eann", "recursions": 1, "type_map": [1, 6, 8]}, "minutes": 10,
               "cores": [1], "load_avg_before": [2.0, 2, 2], "load_avg_after": [2.5, 2, 2],
               "train_summary": {"steps": 1000, "n_parameters": 123}, "test": {"energy_mae": e, "force_mae": f},
               "date": "2026-12-02 01:00:00", "validation": {"force_mae": 3.0}}
        if name == "b_10min":
            rec["at"] = {"5": {"energy_mae": 0.81234, "force_mae": 1.5}, "10": {"energy_mae": e, "force_mae": f}}
        (tmp_path / f"timed_{name}.json").write_text(json.dumps(rec))
    pilot = {"name": "p_8min", "config": "c.yaml", "overrides": {"ema_decay": 0.99, "pref_e_limit": 10},
             "minutes": 8, "cores": [0], "train_summary": {"steps": 4720}, "date": "2026-12-02 02:00:00",
             "validation": {"energy_mae": 0.25631, "force_mae": 0.52279}}
    (tmp_path / "pilot_p_8min.json").write_text(json.dumps(pilot))
    text = tr.report(validate=False)
    assert "| p_8min | c.yaml | ema_decay 0.99, pref_e_limit 10 | 8 | 0 | 4720 | 0.256 | 0.523 |" in text
    rows = [r for r in text.splitlines() if r.startswith("| a_") or r.startswith("| b_")]
    assert len(rows) == 2 and (tmp_path / "timed.md").read_text() == text
    assert "| 3.000 | 1.234 | 2.500 |" in rows[0] and "| 0.500 | 0.988 |" in rows[1]
    assert "| 5: 0.812 / 1.500; 10: 0.500 / 0.988 |" in rows[1] and "| 2.500 |  |" in rows[0]
    assert "recursions 1" in rows[0] and "type_map" not in rows[0] and "| 2.0 / 2.5 |" in rows[0]


@pytest.mark.parametrize("where,kind", [("aspirin_eann", "eann"), ("aspirin_equivariant", "mace")])
def test_committed_local_model_loads_and_reproduces_its_record(where, kind):
    """experiments/results/local_models/{aspirin_eann,aspirin_equivariant}/checkpoint (issue 20)
    loads with lrnn.load and reproduces its recorded test force MAE on the first 100 test
    configurations."""
    import numpy as np

    import lrnn
    from lrnn.data import read
    from tests.conftest import shared_file

    where = ROOT / "experiments/results/local_models" / where
    rec = json.loads((where / "record.json").read_text())
    pot = lrnn.load(where / "checkpoint")
    assert rec["model"]["type"] == kind and kind in repr(pot)
    ds = read(shared_file("rmd17/rmd17_aspirin_test_01.npz")).subset(np.arange(100))
    _, f, _ = pot.predict(ds)
    mae = float(np.mean(np.abs(np.asarray(f) - ds.forces)[ds.mask])) / 0.0433641  # kcal/mol/Å
    assert abs(mae / rec["test"]["force_mae"] - 1) < 0.25, (mae, rec["test"]["force_mae"])


def test_commit_places_a_run_by_its_model_type(tmp_path, monkeypatch):
    """``commit`` refuses a model type with no committed place rather than guessing one."""
    monkeypatch.setattr(tr, "RESULTS", tmp_path)
    (tmp_path / "timed_x.json").write_text(json.dumps({"name": "x", "model": {"type": "deeppot_se"}}))
    with pytest.raises(SystemExit, match="no committed place for model type 'deeppot_se'"):
        tr.commit("x")


def test_pilot_overrides_are_train_options():
    """``pilot --set train.KEY=VALUE``: values read as YAML, into the train section only."""
    from lrnn.train import load_config

    over = tr.parse_overrides(["train.lr_stop=1e-4", "train.ema_decay=0.99", "train.init_from=a/b"])
    assert over == {"lr_stop": "1e-4", "ema_decay": 0.99, "init_from": "a/b"}
    cfg = load_config(ROOT / "experiments/local_models/aspirin_equivariant.yaml")
    tc = tr.dataclasses.replace(cfg["train"], **over)
    assert tc.lr_stop == 1e-4 and tc.ema_decay == 0.99
    for bad in ("model.rcut=4", "train.lr_stop"):
        with pytest.raises(SystemExit, match="expected train.KEY=VALUE"):
            tr.parse_overrides([bad])


def test_val_curve_in_minutes_and_kcal(tmp_path):
    """The validation curve of a run: its metrics.csv rows in minutes and kcal/mol(/Å)."""
    from lrnn.units import KCAL_MOL

    (tmp_path / "metrics.csv").write_text("step,time_s,val_energy_mae_eV,val_force_mae_eV_per_A\n"
                                          "10,30.0,0.1,0.2\n20,120.0,0.05,0.1\n")
    got = tr.val_curve(tmp_path / "metrics.csv")
    want = [[0.5, 0.1 / KCAL_MOL, 0.2 / KCAL_MOL], [2.0, 0.05 / KCAL_MOL, 0.1 / KCAL_MOL]]
    assert len(got) == 2 and all(g == pytest.approx(w) for g, w in zip(got, want))


def test_for_molecule_moves_the_split_files_only():
    """``run --molecule paracetamol`` trains the aspirin config's model and settings on
    paracetamol's files of the same split; an unknown molecule is refused by name."""
    from lrnn.train import load_config

    cfg = load_config(ROOT / "experiments/local_models/aspirin_reann.yaml")
    assert tr.molecule_of(cfg) == "aspirin"
    para = tr.for_molecule(cfg, "paracetamol")
    assert tr.molecule_of(para) == "paracetamol"
    assert para["data"]["train"].endswith("rmd17_paracetamol_train_01.npz")
    assert para["data"]["test"].endswith("rmd17_paracetamol_test_01.npz")
    assert {k: v for k, v in para["data"].items() if k not in ("train", "test")} == \
        {k: v for k, v in cfg["data"].items() if k not in ("train", "test")}
    assert para["model"] == cfg["model"] and para["train"] == cfg["train"]
    with pytest.raises(SystemExit, match="--molecule benzene: no file"):
        tr.for_molecule(cfg, "benzene")
