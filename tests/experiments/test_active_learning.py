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


def test_target_c_is_reached_by_every_run_with_labels_interpolated_between_rounds():
    active = [run([(50, 0.40), (75, 0.30), (100, 0.20)])]
    reference = [run([(50, 0.40), (75, 0.35), (100, 0.25)]), run([(50, 0.40), (75, 0.32), (100, 0.26)])]
    c = al_run.compare(active, reference)["target_c"]
    assert c["force_mae_eV_per_A"] == pytest.approx(0.26)  # the worst final error of the pair
    # active: 0.30 -> 0.20 over 75 -> 100 labels, 0.26 is 40 % of the way: 85 labels
    assert c["active_labels"] == [pytest.approx(85.0)]
    # reference: 0.35 -> 0.25 reaches 0.26 at 90 % of the way (97.5); the other ends there (100)
    assert c["reference_labels"] == [pytest.approx(97.5), pytest.approx(100.0)]
    assert c["ratio"] == pytest.approx(85.0 / 98.75)
    assert al_run._labels_at([(50, 0.2)], 0.3) == 50.0 and al_run._labels_at([(50, 0.4), (75, 0.35)], 0.3) is None


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


def test_report_carries_forward_runs_this_checkout_lacks(tmp_path, monkeypatch):
    """A report from a checkout without an earlier checkout's run directories (git-ignored)
    keeps the al / random runs the previous results.json held, marked as carried; runs on disk
    win.  Pool-arm runs are never carried: they are restored from the kept runs, or were moved
    to a superseded set."""
    import json

    monkeypatch.setattr(al_run, "RESULTS", tmp_path)
    old = {"arms": {"al": [{"run": "al_0", "curve": [[50, 0.3]]}, {"run": "al_1", "curve": [[50, 0.4]]}],
                    "random": [{"run": "random_0", "curve": [[50, 0.5]]}],
                    "qbc": [{"run": "qbc_1", "curve": [[50, 0.2]]}], "pool": [{"run": "pool_0", "curve": [[50, 0.2]]}]}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    arms = {"al": [{"run": "al_0", "curve": [[50, 0.2]]}], "qbc": [{"run": "qbc_0", "curve": [[50, 0.1]]}]}
    al_run.carry_forward(arms)
    assert arms["al"] == [{"run": "al_0", "curve": [[50, 0.2]]}, {"run": "al_1", "curve": [[50, 0.4]], "carried": True}]
    assert arms["random"] == [{"run": "random_0", "curve": [[50, 0.5]], "carried": True}]
    assert arms["qbc"] == [{"run": "qbc_0", "curve": [[50, 0.1]]}] and "pool" not in arms


def test_report_reads_superseded_runs_apart(tmp_path, monkeypatch):
    """Runs moved to superseded_xtb_<sha>/ (an earlier xTB set) are read with their set's name,
    their curves and the labels at which they reach the target."""
    monkeypatch.setattr(al_run, "RESULTS", tmp_path)
    t = al_run.TARGET_F
    run_dir = tmp_path / "superseded_xtb_00cb8317" / "qbc_0"
    run_dir.mkdir(parents=True)
    (run_dir / "al_metrics.csv").write_text(f"round,n_labels,test_force_mae_eV_per_A\n0,50,0.3\n1,75,{t - 0.01}\n")
    assert al_run.superseded() == {"00cb8317": {"qbc_0": {"curve": [(50, 0.3), (75, t - 0.01)], "labels_to_target": 75}}}


def test_kept_pool_run_resumes_in_a_new_checkout(paracetamol, tmp_path):
    """keep.py: a query-by-committee run saved after its first round only (the session ended
    while the final committee trained) is rebuilt in an empty run directory, with the same
    labels and the first round's committee, and the loop goes on from there exactly as the
    uninterrupted run did; a different pool file is refused."""
    import json
    import shutil

    import ase.io
    import numpy as np

    from lrnn.al import load_al_config, run_al
    from tests.test_al import config, emt_labelled

    keep = al_run.keep
    pool_path = emt_labelled(paracetamol, tmp_path / "pool.extxyz", n=24)
    initial = emt_labelled(paracetamol, tmp_path / "initial.extxyz", n=8)
    al, run = load_al_config(config(tmp_path, initial, selection="pool_deviation", pool=str(pool_path), rounds=1,
                                    max_per_round=3, pool_shortlist=2))
    out, kept = tmp_path / "al", tmp_path / "kept"
    whole = run_al(al, run, on_round=lambda rec: rec["round"] == 0 and keep.save(out, kept, pool_path))
    assert keep.save(out, tmp_path / "kept_all", pool_path)  # a first save writes
    assert not keep.save(out, tmp_path / "kept_all", pool_path)  # nothing new: nothing written
    labels = ase.io.read(out / "labels.extxyz", ":")
    state = json.loads((kept / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0] and state["checkpoint"] == "checkpoint_round_00"
    assert [x["pool_index"] for x in state["labels"]] == [a.info["pool_index"] for a in labels]

    shutil.rmtree(out)  # a new checkout: no run directory
    assert keep.restore(out, kept, pool_path) and not keep.restore(out, kept, pool_path)
    again = ase.io.read(out / "labels.extxyz", ":")
    for a, b in zip(again, labels, strict=True):
        assert a.info["al_round"] == b.info["al_round"] and a.info["pool_index"] == b.info["pool_index"]
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        assert a.get_potential_energy() == b.get_potential_energy()
    resumed = run_al(al, run)
    assert resumed[0] == dict(whole[0], checkpoint=str(out / "round_00/model/checkpoint"))
    assert resumed[1]["n_labels"] == whole[1]["n_labels"]
    assert resumed[1]["test_force_mae_eV_per_A"] == pytest.approx(whole[1]["test_force_mae_eV_per_A"], rel=1e-4)

    other = emt_labelled(paracetamol, tmp_path / "other.extxyz", n=23)
    shutil.rmtree(out)
    with pytest.raises(SystemExit, match="sha256"):
        keep.restore(out, kept, other)
