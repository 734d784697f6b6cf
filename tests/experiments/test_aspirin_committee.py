"""The committed committee of 4 DeepPot-SE models on rMD17 aspirin
(experiments/uncertainty/aspirin_committee.py) loads with lrnn.load, and its recorded test
metrics are reproduced on the first test configurations."""

import importlib.util
import json
from pathlib import Path

import numpy as np

import lrnn
from lrnn import uncertainty
from lrnn.data import read
from tests.conftest import shared_file

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments/results/uncertainty/aspirin_committee"
spec = importlib.util.spec_from_file_location("aspirin_committee", ROOT / "experiments/uncertainty/aspirin_committee.py")
ac = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ac)


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


def test_diagnostic_pool_is_disjoint_from_split_01():
    """The pool shares no geometry with split 01's training or test file (checked on the
    coordinates, independently of the old_indices the pool is built from), and its labels
    are those of the source files."""
    train = read(shared_file("rmd17/rmd17_aspirin_train_01.npz"))
    test = read(shared_file("rmd17/rmd17_aspirin_test_01.npz"))
    pool = ac.diagnostic_pool(n=300, data=shared_file("rmd17/rmd17_aspirin_train_02.npz").parent)
    key = lambda x: np.round(x, 4).tobytes()  # noqa: E731
    split01 = {key(x) for x in np.concatenate([train.positions, test.positions])}
    assert len(pool) == 300 and not any(key(x) in split01 for x in pool.positions)
    assert len({key(x) for x in pool.positions}) == 300  # no configuration twice
    other = read(shared_file("rmd17/rmd17_aspirin_train_02.npz"))
    where = {key(x): i for i, x in enumerate(other.positions)}
    hits = [(j, where[key(x)]) for j, x in enumerate(pool.positions) if key(x) in where]
    assert hits, "some pool configurations come from split 02's training file"
    for j, i in hits[:20]:
        assert pool.energy[j] == other.energy[i]
        np.testing.assert_array_equal(pool.forces[j], other.forces[i])


def test_stage3_rule_takes_the_best_pool_spearman_within_the_mae_slack():
    """Stage 3's rule: a higher pool Spearman wins only within 10 % of stage 2's pool MAE."""
    rows = {"refine_subset75": {"pool_force_spearman": 0.40, "pool_force_mae_kcal_mol_A": 1.40},
            "nll_0.01": {"pool_force_spearman": 0.45, "pool_force_mae_kcal_mol_A": 1.50},
            "nll_0.03": {"pool_force_spearman": 0.55, "pool_force_mae_kcal_mol_A": 1.60}}
    assert ac.stage3_choice(rows) == "nll_0.01"  # 1.60 > 1.1 x 1.40 = 1.54: nll_0.03 is out
    rows["nll_0.01"]["pool_force_spearman"] = 0.39
    assert ac.stage3_choice(rows) == "refine_subset75"  # no qualifying variant ranks better
    assert ac.stage3_choice(rows, slack=1.2) == "nll_0.03"
