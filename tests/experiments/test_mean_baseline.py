"""experiments/thesis_table/mean_baseline.py: the error of predicting the fitted mean energy and
zero forces, worked by hand, and the script on a toy molecule (no ../shared/data needed)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mean_baseline", ROOT / "experiments/thesis_table/mean_baseline.py")
mb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mb)
tt = sys.modules["thesis_table"]  # the module mean_baseline reads its plan from


def test_baseline_worked_by_hand():
    """Fitted energies 1, 2, 3 (mean 2); test energies 0 and 5: |0 - 2| = 2, |5 - 2| = 3, mean 2.5.
    Test forces -1, 2, 0, 3 (one configuration, 4 components): mean |F| = 6 / 4 = 1.5."""
    e, f = mb.baseline([1.0, 2.0, 3.0], [0.0, 5.0], [[[-1.0, 2.0], [0.0, 3.0]]])
    assert e == pytest.approx(2.5) and f == pytest.approx(1.5)


def test_splits_cover_every_trained_split_once():
    got = mb.splits()
    for m, spec_m in tt.MOLECULES.items():
        for lab in spec_m["labels"]:
            protos = [p for mm, ll, p in got if (mm, ll) == (m, lab)]
            assert protos == ["thesis_ema", "ef1000", "ef5000"], (m, lab, protos)


def test_script_on_a_toy_molecule(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n = 200
    R = rng.normal(size=(n, 3, 3))
    E, F = rng.normal(size=n) * 2.0 - 50.0, rng.normal(size=(n, 3, 3))
    np.savez(tmp_path / "toy.npz", R=R, z=np.array([8, 1, 1]), E=E, F=F, e_unit="kcal/mol", r_unit="Angstrom")
    monkeypatch.setattr(tt, "MOLECULES", {"toy": {"source": "sgdml", "labels": ["gfn2-xtb"], "step_scale": 1.0,
                                                 "ms": (1, 1), "paths": [tmp_path / "toy.npz"]}})
    monkeypatch.setattr(mb, "MOLECULES", tt.MOLECULES)
    monkeypatch.setitem(tt.PROTOCOLS["ef1000"], "n", 100)  # the toy pool has 200 configurations
    monkeypatch.setitem(tt.PROTOCOLS["ef5000"], "n", 150)
    out = tmp_path / "res"
    out.mkdir()
    local = {"molecule": "toy", "labels": "gfn2-xtb", "protocol": "ef1000", "variant": "local", "status": "ok"}
    (out / "results.json").write_text(json.dumps([{**local, "seed": s, "energy_mae_kcal_mol": x}
                                                  for s, x in ((0, 1.0), (1, 2.0))]))
    mb.main(["--data-dir", str(tmp_path / "data"), "--out", str(out)])
    rows = {r["protocol"]: r for r in json.loads((out / "mean_baseline.json").read_text())["rows"]}
    assert set(rows) == {"thesis_ema", "ef1000", "ef5000"}
    assert (rows["thesis_ema"]["n_fit"], rows["thesis_ema"]["n_test"]) == (180, 20)  # 80/10/10: fit = 80 + 10
    assert (rows["ef1000"]["n_fit"], rows["ef1000"]["n_test"]) == (100, 20)  # tested on the thesis split's test
    # the thesis split's test part is the last 10 % of the split permutation; its fit part the first 90 %
    perm = np.random.default_rng(tt.SPLIT_SEED).permutation(n)
    want = np.mean(np.abs(E[perm[180:]] - E[perm[:180]].mean()))
    assert rows["thesis_ema"]["energy_mae_mean_kcal_mol"] == pytest.approx(want)
    assert rows["ef1000"]["local_energy_mae_kcal_mol"] == {"ef1000": 1.5}
    assert rows["ef1000"]["local_seeds"] == {"ef1000": 2}
    assert "| toy | gfn2-xtb | ef1000 | 100 | 20 |" in (out / "mean_baseline.md").read_text()
