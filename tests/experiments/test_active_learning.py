"""experiments/active_learning/run.py: how an active arm is compared with its random reference."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("al_run", ROOT / "experiments" / "active_learning" / "run.py")
al_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(al_run)


def run(curve):
    target = al_run.TARGET_F
    return {"curve": curve, "labels_to_target": next((n for n, f in curve if f <= target), None)}


def test_compare_counts_labels_to_both_targets():
    t = al_run.TARGET_F
    active = [run([(50, 0.3), (75, t - 0.01), (100, t - 0.02)]), run([(50, 0.3), (75, 0.2), (100, t)])]
    reference = [run([(50, 0.3), (75, 0.2), (100, t - 0.01)]), run([(50, 0.3), (75, 0.25), (100, t - 0.03)])]
    c = al_run.compare(active, reference)
    assert c["ratio"] == pytest.approx((75 + 100) / 2 / 100)
    # (b): the reference ends at mean t - 0.02; the first active run gets there at 100, the second never
    assert c["target_b"]["force_mae_eV_per_A"] == pytest.approx(t - 0.02)
    assert c["target_b"]["active_labels"] == [100, None] and "ratio" not in c["target_b"]
    assert c["target_b"]["reference_labels"] == 100


def test_compare_without_reaching_the_target_reports_no_ratio():
    active = [run([(50, 0.4), (75, 0.35)])]
    reference = [run([(50, 0.4), (75, 0.38)])]
    c = al_run.compare(active, reference)
    assert "ratio" not in c
    assert c["target_b"]["active_labels"] == [75] and c["target_b"]["ratio"] == pytest.approx(1.0)
    assert al_run.compare([], reference) == {"active_runs": 0, "reference_runs": 1}


def test_qbc_arm_selects_from_the_pool_by_deviation():
    assert al_run.SELECTION["qbc"] == "pool_deviation" and ("qbc", "pool") in al_run.PAIRS


def test_the_arms_of_a_pair_differ_only_in_selection():
    """Each pair's two arms get the same data, seed and training budget; only how frames are
    chosen (and, for qbc, the trust levels that go with it) differs.  The pool pair trains
    POOL_STEPS steps a round, the al / random pair config.yaml's budget."""
    import yaml

    base = yaml.safe_load((al_run.HERE / "config.yaml").read_text())
    for active, reference in al_run.PAIRS:
        a, b = (al_run.arm_config(base, arm, 1) for arm in (active, reference))
        assert a["train"] == b["train"] and a["model"] == b["model"] and a["train"]["seed"] == 1
        same = {k for k in a["al"] if k not in ("selection", "trust_lo", "trust_hi", "stop_deviation", "pool_shortlist")}
        assert {k: a["al"][k] for k in same} == {k: b["al"].get(k) for k in same}
        assert a["output"] != b["output"]
    pool = al_run.arm_config(base, "pool", 0)
    assert pool["train"]["max_steps"] == pool["al"]["warm_steps"] == al_run.POOL_STEPS
    assert al_run.arm_config(base, "al", 0)["train"]["max_steps"] == base["train"]["max_steps"]


def test_report_refuses_to_drop_runs_it_reported_before(tmp_path, monkeypatch):
    """A report from a checkout without the run directories (git-ignored) would rewrite
    results.json without the runs it held: it stops and names them instead."""
    import json

    monkeypatch.setattr(al_run, "RESULTS", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"arms": {"al": [{"run": "al_0"}, {"run": "al_1"}],
                                                                 "random": [{"run": "random_0"}]}}))
    al_run.check_no_run_lost({"arms": {"al": [{"run": "al_0"}, {"run": "al_1"}], "random": [{"run": "random_0"}],
                                       "qbc": [{"run": "qbc_0"}]}})
    with pytest.raises(SystemExit, match=r"holds runs \['al_1', 'random_0'\]"):
        al_run.check_no_run_lost({"arms": {"al": [{"run": "al_0"}], "qbc": [{"run": "qbc_0"}]}})
