"""lrnn al: explore with a committee, select, label with a reference calculator, retrain.

ASE's EMT stands in for GFN2-xTB (it has H, C, N, O parameters and costs nothing)."""

import dataclasses
import json
import shutil

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from lrnn import checkpoint as ckpt
from lrnn.al import (
    ALConfig,
    PoolLabels,
    farthest_point_sampling,
    label,
    load_al_config,
    model_deviations,
    query_pool,
    run_al,
    select,
    select_from_pool,
    trust_levels,
)
from lrnn.potential import Potential
from tests.conftest import TINY_MODEL


class FlakyEMT(EMT):
    """EMT that fails on its second calculation (a reference that crashes on one frame)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        FlakyEMT.calls += 1
        if FlakyEMT.calls == 2:
            raise RuntimeError("SCF did not converge")
        super().calculate(*args, **kwargs)


def emt_labelled(paracetamol, path, n=16):
    frames = []
    for k in range(n):
        a = Atoms(numbers=paracetamol.numbers[k], positions=paracetamol.positions[k])
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = None
        a.info["energy"] = e
        a.arrays["forces"] = f
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")
    return path


def config(tmp_path, initial, **al):
    return {"al": {"initial": str(initial), "rounds": 2, "temperatures_K": [300], "trajectories": 1, "md_steps": 20,
                   "sample_every": 5, "trust_lo": 0.0, "trust_hi": 1e6, "stop_deviation": 1e6, "max_per_round": 3,
                   "reference": {"calculator": "ase.calculators.emt:EMT"}, "test": str(initial), **al},
            "model": dict(TINY_MODEL),
            "train": {"committee": 2, "max_steps": 20, "batch_size": 4, "checkpoint_every_s": 0, "progress": False,
                      "lr_start": 1e-3, "lr_stop": 1e-4, "decay_steps": 10},
            "output": str(tmp_path / "al")}


def test_loop_labels_skips_failures_retrains_warm_and_resumes(paracetamol, tmp_path):
    """One round and the final training, with a reference that fails on its second frame;
    then an interruption that lost the last label and everything after it."""
    FlakyEMT.calls = 0
    initial = emt_labelled(paracetamol, tmp_path / "initial.extxyz")
    al, run = load_al_config(config(tmp_path, initial, rounds=1, reference={"calculator": "tests.test_al:FlakyEMT"},
                                    trust_relative=True, warm_steps=7, warm_lr_start=5e-4))
    recs = run_al(al, run)
    out = tmp_path / "al"
    # relative levels: multiples (0, 1e6, 1e6) of the round-0 committee's median deviation on its training frames
    med = np.median(model_deviations(Potential.from_checkpoint(out / "round_00/model/checkpoint"),
                                     ase.io.read(initial, ":")))
    assert med > 0 and recs[0]["trust_lo"] == 0.0
    assert recs[0]["trust_hi"] == pytest.approx(1e6 * med, rel=1e-6) == recs[0]["stop_deviation"]
    assert [r["round"] for r in recs] == [0, 1]
    assert recs[0]["n_candidates"] == 4 and recs[0]["n_selected"] == 3  # 20 steps sampled every 5; FPS keeps 3
    fails = [json.loads(x) for x in (out / "label_failures.jsonl").read_text().splitlines()]
    assert fails == [{"round": 0, "index": 1, "error": "RuntimeError: SCF did not converge"}]  # logged, skipped
    assert recs[0]["labelled"] == 2 and recs[0]["failed"] == 1
    labels = ase.io.read(out / "labels.extxyz", ":")
    assert [(a.info["al_round"], a.info["al_index"]) for a in labels] == [(0, 0), (0, 2)]
    for a in labels:  # each label is the reference's energy and forces at that geometry
        b = Atoms(numbers=a.numbers, positions=a.positions)
        b.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)  # read back from extxyz
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-8)
        assert "model_deviation" in a.info
    assert recs[-1]["n_labels"] == 16 + 2 and recs[-1]["test_force_mae_eV_per_A"] > 0
    meta, _, _ = ckpt.load(out / "final/model/checkpoint")
    assert meta["train"]["config"]["init_from"] == str(out / "round_00/model/checkpoint")  # warm start
    assert meta["committee"] == 2
    assert meta["train"]["config"]["max_steps"] == 7 and meta["train"]["config"]["lr_start"] == 5e-4  # warm_*
    steps = [json.loads((out / d / "model/train_summary.json").read_text())["steps"] for d in ("round_00", "final")]
    assert 7 <= steps[1] < 20 <= steps[0]  # whole epochs: at least max_steps

    # an interrupted run: the last label and everything after it lost; the rerun redoes only that
    cand_before = (out / "round_00/candidates.extxyz").read_bytes()
    ase.io.write(out / "labels.extxyz", labels[:-1], format="extxyz")
    shutil.rmtree(out / "final")
    (out / "round_00/round.json").unlink()
    recs2 = run_al(al, run)
    labels2 = ase.io.read(out / "labels.extxyz", ":")
    assert [(a.info["al_round"], a.info["al_index"]) for a in labels2] == [(0, 0), (0, 2)]  # no duplicate, no retry of 1
    assert (out / "round_00/candidates.extxyz").read_bytes() == cand_before  # exploration not redone
    assert recs2[-1]["n_labels"] == 18


def test_bad_al_configs(tmp_path):
    with pytest.raises(ValueError, match="committee >= 2"):
        cfg = config(tmp_path, tmp_path / "x.extxyz")
        cfg["train"]["committee"] = 1
        load_al_config(cfg)
    with pytest.raises(ValueError, match="trust_lo < trust_hi"):
        ALConfig(initial="x", trust_lo=0.5, trust_hi=0.1)
    with pytest.raises(ValueError, match="unknown al option"):
        load_al_config(dict(config(tmp_path, "x"), al={"initial": "x", "trust": 1}))


def test_relative_trust_levels():
    al = ALConfig(initial="x", trust_relative=True, trust_lo=1.0, trust_hi=3.0, stop_deviation=4.0)
    lv = trust_levels(al, [0.2, 0.5, 0.3, 10.0])  # median 0.4
    assert (lv.trust_lo, lv.trust_hi, lv.stop_deviation) == pytest.approx((0.4, 1.2, 1.6))
    assert trust_levels(dataclasses.replace(al, trust_relative=False), [0.2]) == dataclasses.replace(
        al, trust_relative=False)  # absolute levels unchanged
    with pytest.raises(ValueError, match="finite model deviations"):
        trust_levels(al, [0.2, float("nan")])
    with pytest.raises(ValueError, match="warm_steps"):
        ALConfig(initial="x", warm_steps=-1)


def test_random_selection_draws_from_all_candidates():
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + 0.01 * k]], info={"model_deviation": 10.0 * k})
              for k in range(10)]
    al = ALConfig(initial="x", selection="random", max_per_round=4, trust_hi=0.5)
    got = select(None, frames, al, np.random.default_rng(0))
    assert len(got) == 4 and len({a.info["model_deviation"] for a in got}) == 4
    assert any(a.info["model_deviation"] >= 0.5 for a in got)  # not restricted to the trust window


def test_farthest_point_sampling_spreads_out():
    x = np.array([[0.0], [0.1], [10.0], [5.0], [0.2]])
    assert list(farthest_point_sampling(x, 3, first=0)) == [0, 2, 3]


def test_pool_selection_draws_unused_frames_and_reads_their_stored_labels(paracetamol, tmp_path):
    """The passive baseline: frames drawn without replacement from a labelled pool; their
    labels are the stored ones, appended like computed labels (and refused for moved atoms)."""
    pool_path = emt_labelled(paracetamol, tmp_path / "pool.extxyz", n=10)
    pool = ase.io.read(pool_path, ":")
    al = ALConfig(initial="x", selection="pool", pool=str(pool_path), max_per_round=4)
    rng = np.random.default_rng(0)
    first = select_from_pool(pool, set(), al, rng)
    used = {a.info["pool_index"] for a in first}
    second = select_from_pool(pool, used, al, rng)
    assert len(first) == len(second) == 4 and not used & {a.info["pool_index"] for a in second}
    assert len(select_from_pool(pool, set(range(8)), al, rng)) == 2  # only two left
    assert all(a.calc is None and "energy" not in a.info for a in first)  # unlabelled copies
    out = tmp_path / "labels.extxyz"
    rec = label(first, PoolLabels(pool), out, tmp_path / "fail.jsonl", 0)
    assert rec == {"labelled": 4, "failed": 0}
    for a in ase.io.read(out, ":"):
        b = Atoms(numbers=a.numbers, positions=a.positions)
        b.calc = EMT()  # the pool was labelled with EMT: the stored labels are EMT's (positions written twice)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-6)
    moved = first[0].copy()
    moved.positions[0, 0] += 0.1
    moved.calc = PoolLabels(pool)
    with pytest.raises(ValueError, match="positions differ"):
        moved.get_potential_energy()
    with pytest.raises(ValueError, match="need al.pool"):
        ALConfig(initial="x", selection="pool")


def test_pool_query_by_committee_picks_the_most_uncertain_unused_frames(paracetamol, tmp_path):
    """selection pool_deviation: the round's frames are among the pool_shortlist x
    max_per_round unused frames of largest deviation under the round's committee (recomputed
    here from its checkpoint), the largest one included; used frames are never offered again;
    the labels are the pool's."""
    pool_path = emt_labelled(paracetamol, tmp_path / "pool.extxyz", n=24)
    initial = emt_labelled(paracetamol, tmp_path / "initial.extxyz", n=8)
    pool = ase.io.read(pool_path, ":")
    cfg = config(tmp_path, initial, selection="pool_deviation", pool=str(pool_path), rounds=1, max_per_round=3,
                 pool_shortlist=2)
    al, run = load_al_config(cfg)
    rec = run_al(al, run)[0]
    rd = tmp_path / "al" / "round_00"
    sel = [a.info["pool_index"] for a in ase.io.read(rd / "selected.extxyz", ":")]
    pot = Potential.from_checkpoint(rd / "model" / "checkpoint")
    dev = model_deviations(pot, pool)
    order = [int(k) for k in np.argsort(-dev)]
    assert len(set(sel)) == 3 and set(sel) <= set(order[:6]) and order[0] in sel
    assert rec["labelled"] == 3 and rec["frac_candidate"] == 1.0  # trust window 0 .. 1e6 eV/Å: every frame
    labels = ase.io.read(tmp_path / "al" / "labels.extxyz", ":")
    assert sorted(a.info["pool_index"] for a in labels) == sorted(sel)
    for a in labels:
        assert a.get_potential_energy() == pytest.approx(pool[a.info["pool_index"]].get_potential_energy(), abs=1e-9)
    # used frames are skipped; a trust window keeps out frames at or above trust_hi
    again, _ = query_pool(pot, pool, set(order[:6]), al)
    assert not {a.info["pool_index"] for a in again} & set(order[:6])
    capped = dataclasses.replace(al, trust_lo=0.0, trust_hi=float(dev[order[0]]))
    assert order[0] not in {a.info["pool_index"] for a in query_pool(pot, pool, set(), capped)[0]}
    with pytest.raises(ValueError, match="need al.pool"):
        ALConfig(initial="x", selection="pool_deviation")
    with pytest.raises(ValueError, match="pool_shortlist"):
        ALConfig(initial="x", selection="pool_deviation", pool="p", pool_shortlist=0)
