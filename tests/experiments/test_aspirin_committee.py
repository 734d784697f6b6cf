"""The committed committee of 4 DeepPot-SE models on rMD17 aspirin
(experiments/uncertainty/aspirin_committee.py) loads with lrnn.load, and its recorded test
metrics are reproduced on the first test configurations."""

import json
from pathlib import Path

import numpy as np

import lrnn
from lrnn import uncertainty
from lrnn.data import read
from tests.conftest import shared_file

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments/results/uncertainty/aspirin_committee"


def test_committed_committee_loads_and_reproduces_its_record():
    assert (RESULTS / "checkpoint").exists(), f"the committed aspirin committee is missing: {RESULTS}/checkpoint"
    rec = json.loads((RESULTS / "results.json").read_text())
    pot = lrnn.load(RESULTS / "checkpoint")
    assert pot.committee == 4 == rec["members"]
    ds = read(shared_file("rmd17/rmd17_aspirin_test_01.npz"))
    sub = ds.subset(np.arange(100))
    e_k, f_k, _ = pot.predict_members(sub)
    kcal = 0.0433641  # eV per kcal/mol
    force_mae = float(np.mean(np.abs(f_k.mean(0) - sub.forces)[sub.mask])) / kcal
    # the first 100 of the 1000 test configurations: the same error within 25 %
    assert abs(force_mae / rec["test"]["force_mae"] - 1) < 0.25, (force_mae, rec["test"]["force_mae"])
    res = uncertainty.committee_metrics(f_k, sub.forces, sub.mask, pot.meta["calibration"]["force_std_scale"])
    assert abs(res["force_spearman"] - rec["test"]["force_spearman"]) < 0.2
    for key in ("miscalibration_area", "miscalibration_area_recalibrated"):
        assert abs(res[key] - rec["test"][key]) < 0.1, (key, res[key], rec["test"][key])
    r = pot.calculate(sub.positions[0][: int(sub.n_atoms[0])], sub.numbers[0][: int(sub.n_atoms[0])])
    assert r["forces_std"].shape == (21,) and r["model_deviation"] > 0
