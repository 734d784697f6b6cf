"""experiments/thesis_table.py on a toy 5-atom molecule (no ../shared/data needed): the records
carry the required fields in kcal/mol, a rerun skips what is recorded, the report shows
mean ± std with the thesis columns and failed runs, and shards partition the plan."""

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lrnn.data import read
from lrnn.potential import load
from lrnn.units import KCAL_MOL

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("thesis_table", ROOT / "experiments/thesis_table.py")
tt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tt)

def toy_npz(path, n=120, seed=0):
    """CH4-like molecules with harmonic C-H bonds: E = Σ k (r - r0)² kcal/mol, F = -∇E."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1], [-0.6, -0.6, -0.6]], float)
    R = base + 0.08 * rng.standard_normal((n, 5, 3))
    d = R[:, 1:] - R[:, :1]
    r = np.linalg.norm(d, axis=-1)
    E = -1000.0 + 50.0 * np.sum((r - 1.09) ** 2, axis=1)
    g = 100.0 * (r - 1.09)[..., None] * d / r[..., None]  # dE/dR_H
    F = np.concatenate([g.sum(1, keepdims=True), -g], axis=1)
    np.savez(path, R=R, z=np.array([6, 1, 1, 1, 1]), E=E, F=F, e_unit="kcal/mol", r_unit="Angstrom")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    toy_npz(tmp_path / "toy.npz")
    monkeypatch.setitem(tt.MOLECULES, "toy", {"source": "sgdml", "labels": ["gfn2-xtb"], "step_scale": 1.0,
                                              "ms": (1, 1), "paths": [tmp_path / "toy.npz"]})
    monkeypatch.setitem(tt.THESIS, "toy", (4.0, 5.0, 0.5))
    dirs = ["--out", str(tmp_path / "res"), "--work-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    return tmp_path, dirs


def test_pipeline_records_resume_report(toy, monkeypatch, capsys):
    tmp, dirs = toy
    args = ["--quick", "--steps", "8", "--only", "molecule=toy,protocol=ef1000,variant=local"] + dirs
    tt.main(args)  # energies and forces
    tt.main(["--quick", "--steps", "8", "--only", "molecule=toy,protocol=thesis_ema,variant=far_field"] + dirs)
    path = tmp / "res" / "results.json"
    recs = {(r["protocol"], r["variant"]): r for r in json.loads(path.read_text())}
    assert set(recs) == {("ef1000", "local"), ("thesis_ema", "far_field")}
    for (proto, _var), r in recs.items():
        assert r["status"] == "ok", r.get("error")
        for k in ("molecule", "labels", "protocol", "variant", "seed", "n_train", "energy_mae_kcal_mol",
                  "force_mae_kcal_mol_A", "train_time_s", "val_energy_mae_kcal_mol", "steps", "wall_s",
                  "command", "git_commit", "loadavg_start"):
            assert k in r, k
        assert (r["molecule"], r["labels"], r["seed"]) == ("toy", "gfn2-xtb", 0)
        assert r["steps"] >= 8 and r["train_time_s"] > 0 and np.isfinite(r["energy_mae_kcal_mol"])
        assert (r["force_mae_kcal_mol_A"] is None) == (proto == "thesis_ema")
    assert recs[("thesis_ema", "far_field")]["n_train"] == 96 and recs[("ef1000", "local")]["n_train"] == 32
    # the records name the set they were trained on, and so do the split files of a generated set
    sha = hashlib.sha256(b"".join(np.load(tmp / "toy.npz")[k].tobytes() for k in "RzEF")).hexdigest()
    assert {r["data_sha256"] for r in recs.values()} == {sha}
    assert len(list((tmp / "data").glob(f"toy_gfn2-xtb_n120_{sha[:12]}_*_quick_t*.npz"))) == 4
    stored = json.loads((tmp / "runs" / "quick" / "toy__gfn2-xtb__thesis_ema__far_field__0" / "checkpoint" /
                         "lrnn.json").read_text())["train"]["config"]
    assert stored["ema_decay"] == 0.999 and stored["pref_f_limit"] == 0.0  # the recipe: weight average, no forces
    # units: the recorded MAE equals the checkpoint's test error converted from eV to kcal/mol
    r = recs[("ef1000", "local")]
    run = tmp / "runs" / "quick" / "toy__gfn2-xtb__ef1000__local__0"
    test = read(next((tmp / "data").glob("toy_*_ef1000_quick_test.npz")))
    e, f, _ = load(run / "checkpoint").predict(test)
    assert np.isclose(np.mean(np.abs(e - test.energy)) / KCAL_MOL, r["energy_mae_kcal_mol"], rtol=1e-5)
    assert np.isclose(np.mean(np.abs(f - test.forces)) / KCAL_MOL, r["force_mae_kcal_mol_A"], rtol=1e-5)

    # resume: everything recorded is skipped, nothing is trained
    monkeypatch.setattr(tt, "train", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    before = path.read_text()
    tt.main(args)
    assert path.read_text() == before

    # report: mean ± sample std over seeds (0.5, 0.7: sqrt(0.1² + 0.1²) = 0.141), thesis and sGDML
    # columns, failures shown
    for var, seed, mae in (("far_field", 0, 0.5), ("far_field", 1, 0.7)):  # a second variant, two seeds
        tt.add_record(path, {**recs[("ef1000", "local")], "variant": var, "seed": seed, "energy_mae_kcal_mol": mae})
    tt.add_record(path, {"molecule": "toy", "labels": "gfn2-xtb", "protocol": "ef1000", "variant": "sog",
                         "seed": 0, "status": "failed", "error": "RuntimeError: boom"})
    capsys.readouterr()
    tt.main(["--report"] + dirs)
    md = (tmp / "res" / "results.md").read_text()
    row = next(x for x in md.splitlines() if x.startswith("| toy | gfn2-xtb | ef1000 | 32 |"))
    assert f"{r['energy_mae_kcal_mol']:.3f} (n=1)" in row and "0.600 ± 0.141 (n=2)" in row
    assert "4.0 / 5.0 | 0.5 |" in row
    assert "**1 failed**" in row and "RuntimeError: boom" in md and "like-for-like" in md.lower()
    rel = md.split("## Relative change")[1]
    row = next(x for x in rel.splitlines() if x.startswith("| toy | gfn2-xtb | ef1000 |"))
    want = 100 * (0.5 / r["energy_mae_kcal_mol"] - 1)  # far_field vs local, paired by seed (seed 0 only)
    assert f"{want:+.1f} (n=1)" in row
    tt.main(["--list", "--only", "molecule=toy"] + dirs)
    assert "54 runs, 5 recorded" in capsys.readouterr().out


def test_shards_partition_the_plan():
    full = tt.plan([0, 1, 2])
    assert len(full) == 3 * 6 * 3 * len(tt.VARIANTS)  # seeds x (molecule, labels) x protocols x variants
    assert full[0]["labels"] == "md17" and full[0]["protocol"] == "thesis_ema"
    assert "thesis" not in {j["protocol"] for j in full}  # the first recipe runs only where named
    assert {j["protocol"] for j in tt.plan([0], tt.parse_only("protocol=thesis"))} == {"thesis"}
    shards = [tt.plan([0, 1, 2], shard=(k, 3)) for k in range(3)]
    keys = [tt.key(j) for s in shards for j in s]
    assert sorted(keys) == sorted(map(tt.key, full)) and len(set(keys)) == len(keys)
    only = tt.parse_only("molecule=aspirin,variant=local+grid,seed=1")
    assert {(j["molecule"], j["variant"], j["seed"]) for j in tt.plan([0, 1, 2], only)} == {
        ("aspirin", "local", 1), ("aspirin", "grid", 1)}


def test_estimate_scales_local_by_the_measured_variant_cost():
    """Worked by hand: grid took 300 s against local's 100 s (aspirin ef1000) and 500 s against
    250 s (paracetamol ef1000), a mean ratio of (3 + 2) / 2 = 2.5; aspirin thesis local took
    1000 and 1200 s, so its grid is expected at 1100 x 2.5 = 2750 s, and at twice that under
    thesis_ema (the same split, 200,000 steps instead of 100,000); ef5000 takes ef1000's.  A recorded cell gives its own
    mean; a failed run counts for nothing; no local run falls back to the cost model."""
    def rec(m, p, v, wall, status="ok", steps=20000):
        return {"molecule": m, "protocol": p, "variant": v, "wall_s": wall, "status": status, "steps_planned": steps}
    done = [rec("aspirin", "ef1000", "grid", 300.0), rec("aspirin", "ef1000", "local", 100.0),
            rec("paracetamol", "ef1000", "grid", 500.0), rec("paracetamol", "ef1000", "local", 250.0),
            rec("aspirin", "thesis", "local", 1000.0, steps=100000), rec("aspirin", "thesis", "local", 1200.0, steps=100000),
            rec("aspirin", "thesis", "grid", 9.0, status="failed", steps=100000)]
    job = {"molecule": "aspirin", "protocol": "thesis", "variant": "grid"}
    assert tt.estimate_s(job, 100000, done) == pytest.approx(2750.0)
    assert tt.estimate_s({**job, "protocol": "ef1000"}, 20000, done) == pytest.approx(300.0)
    # no ef5000 run: ef1000's (the same loss and steps, a smaller training set)
    assert tt.estimate_s({**job, "protocol": "ef5000"}, 20000, done) == pytest.approx(300.0)
    far = {**job, "variant": "far_field"}  # no far_field run anywhere: the model's cost ratio
    assert tt.estimate_s(far, 100000, done) == pytest.approx(1100.0 * tt.VARIANT_COST["far_field"])
    # no thesis_ema run (200,000 steps): the thesis runs (same split and loss) at twice the steps
    assert tt.estimate_s({**job, "protocol": "thesis_ema"}, 200000, done) == pytest.approx(2 * 2750.0)
    assert tt.estimate_s({**job, "protocol": "thesis_ema", "variant": "local"}, 200000, done) == pytest.approx(2200.0)
    para = {**job, "molecule": "paracetamol"}  # no paracetamol thesis run: the cost model
    ms = tt.MOLECULES["paracetamol"]["ms"][tt.PROTOCOLS["thesis"]["forces"]]
    assert tt.estimate_s(para, 100000, done) == pytest.approx(tt.OVERHEAD_S + 100000 * ms / 1e3 * tt.VARIANT_COST["grid"])


def test_estimate_counts_every_segment_of_a_resumed_run():
    """A run killed at a checkpoint and resumed in a later session records the last segment's wall
    (1000 s, of which its training call took 900 s) and the training summed over all segments
    (6000 s): it cost 1000 + 6000 - 900 = 6100 s, not 1000 s.  An uninterrupted run's wall stands."""
    rec = {"molecule": "aspirin", "protocol": "thesis_ema", "variant": "local", "status": "ok",
           "steps_planned": 200000, "wall_s": 1000.0, "train_time_s": 6000.0, "train_call_s": 900.0}
    job = {"molecule": "aspirin", "protocol": "thesis_ema", "variant": "local"}
    assert tt.estimate_s(job, 200000, [{**rec, "resumed": True}]) == pytest.approx(6100.0)
    assert tt.estimate_s(job, 200000, [{**rec, "resumed": False}]) == pytest.approx(1000.0)


def test_findings_say_helps_or_hurts_only_beyond_the_seed_spread():
    """Relative changes paired by seed, worked by hand: far_field -10 % and -20 % (mean -15,
    sample std sqrt(5² + 5²) = 7.07: helps, but 2 seeds are not called); lr_recipe +10, +20 and
    +30 % (mean 20, std 10: hurts, called at 3 seeds); sog +10 % and -10 % (0 ± sqrt(200) = 14.14:
    within the spread); grid +50 % on one seed."""
    def rec(v, seed, e, m="aspirin"):
        return {"molecule": m, "labels": "md17", "protocol": "thesis", "variant": v, "seed": seed,
                "status": "ok", "energy_mae_kcal_mol": e}
    recs = [rec("local", 0, 2.0), rec("local", 1, 1.0), rec("far_field", 0, 1.8), rec("far_field", 1, 0.8),
            rec("sog", 0, 2.2), rec("sog", 1, 0.9), rec("grid", 1, 1.5), rec("grid", 5, 9.0),
            {**rec("latent_coulomb", 0, 0.1), "status": "failed"}, rec("sog", 0, 1.0, m="paracetamol"),
            rec("local", 2, 1.0), rec("lr_recipe", 0, 2.2), rec("lr_recipe", 1, 1.2), rec("lr_recipe", 2, 1.3)]
    got = tt.findings(recs)
    assert got == ["aspirin (md17 labels, thesis protocol), far_field vs local: -15.0 ± 7.1 % (2 paired seeds): "
                   "helps on 2 seeds, not yet called",
                   "aspirin (md17 labels, thesis protocol), grid vs local: +50.0 % (1 paired seed): "
                   "one seed, no spread yet",
                   "aspirin (md17 labels, thesis protocol), lr_recipe vs local: +20.0 ± 10.0 % (3 paired seeds): hurts",
                   "aspirin (md17 labels, thesis protocol), sog vs local: +0.0 ± 14.1 % (2 paired seeds): "
                   "within the seed spread"]


def test_acceptance_best_variant_is_chosen_on_validation(tmp_path):
    """The bar "best variant within 2x of sGDML" names the variant with the lowest validation error
    and reports its test error; the lower test error of another variant is not looked at."""
    path = tmp_path / "results.json"
    for var, val, test in (("local", 1.0, 0.5), ("sog", 0.9, 0.8)):  # test prefers local, validation sog
        tt.add_record(path, {"molecule": "paracetamol", "labels": "md17", "protocol": tt.ACCEPTANCE,
                             "variant": var, "seed": 0, "status": "ok", "n_train": 7706, "train_time_s": 1.0,
                             "energy_mae_kcal_mol": test, "val_energy_mae_kcal_mol": val,
                             "force_mae_kcal_mol_A": None})
    tt.report(path)
    line = next(x for x in (tmp_path / "results.md").read_text().splitlines() if x.startswith("- paracetamol:"))
    assert "best on validation sog, test 0.800" in line and f"{0.8 / 0.113:.1f}× sGDML" in line
