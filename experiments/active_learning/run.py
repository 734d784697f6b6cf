"""Active learning against random selection on Ac-Ala3-NHMe (GFN2-xTB labels).

    .venv/bin/python experiments/active_learning/run.py prepare   # data from the xTB set
    .venv/bin/python experiments/active_learning/run.py run [--repeats 0 1 2] [--arms al random pool]
    .venv/bin/python experiments/active_learning/run.py report

Data (``experiments/xtb_data``: Langevin MD at 500 K, one frame per 10 fs, 6000 frames):
the 50 starting configurations of repeat r are drawn (seed r) from the first 30 ps of the
trajectory, the 500 test configurations from the last 30 ps (a different stretch of one
run, not an independent trajectory; the two stretches meet at 30 ps).  Both arms explore with their own
committee (``config.yaml``: 4 DeepPot-SE members, MD at 500 K from training frames) and
label 25 frames a round with GFN2-xTB: ``al`` picks frames whose model deviation is in the
trust window (farthest-point spread), ``random`` picks uniformly among all explored frames.
A third arm, ``pool``, explores nothing: it draws 25 frames a round uniformly from the
xTB trajectory's first half (the stretch the initial frames come from, less those), whose
labels exist already: random selection from the reference MD, the distribution the test
frames come from (added after the first runs showed the explored frames to lie far above
it in energy; see ``report``).  A fourth arm, ``qbc``, is active learning on that same pool
(``selection: pool_deviation``, query by committee: the 25 unused pool frames of largest
model deviation, spread by farthest-point sampling over the 100 largest).  The pool holds
the reference's own MD, so no frame is broken and there is no upper trust level (levels
0 and 1000 times the median deviation).  ``qbc`` against ``pool`` is the issue's
comparison "against random selection from the same MD pool"; ``al`` against ``random`` is
the DP-GEN loop with exploration.  Both pairs were fixed before any ``qbc`` run.

Targets, fixed here before any run: (a) ``TARGET_F`` eV/Å test force MAE; (b) the test
force MAE the random arm reaches after its last round (mean over repeats), so that the
question "how many labels does active learning need for what random selection gets with
all of its labels" always has an answer.  The report gives, per arm and repeat, the labels
at the first round whose committee reaches each target (no interpolation between rounds),
and the ratio al/random of the means over repeats; a run that never reaches a target is
reported as such.  Target (c), added after all three repeats of every arm were complete, when
no pair had a ratio at (a) or (b): the largest final test force MAE among a pair's complete runs,
which every one of them reaches, so that the pair always has a measured ratio; its labels are
interpolated linearly between rounds (25 labels apart).  ``report`` also evaluates each
finished pool / qbc committee on the test frames: how well its deviation ranks its errors.
Runs are resumable: rerun the same command after an interruption.  The ``pool`` and ``qbc``
runs (about 2.8 h per arm and repeat on one core) are also kept round by round under
``experiments/results/active_learning/runs/`` (``keep.py``; commit it), so that a new checkout
restores them and goes on, given the same xTB set (committed since its regeneration was seen
not to reproduce it on another machine; checked by sha256).  Runs on an earlier set are moved
to ``superseded_xtb_<sha>/`` and reported apart (``results.json`` ``superseded``).
``report`` carries forward, marked as such, the runs of the previous ``results.json`` whose
run directories this checkout lacks (the al / random runs of an earlier checkout).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase import Atoms

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lrnn import units  # noqa: E402
from lrnn.al import load_al_config, run_al  # noqa: E402
from lrnn.evaluate import evaluate  # noqa: E402
from lrnn.plots import _plt, _save  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import keep  # noqa: E402

DATA = HERE / "data"
RUNS = ROOT / "runs/active_learning"
RESULTS = ROOT / "experiments/results/active_learning"
KEEP = RESULTS / "runs"  # the pool arms' runs, round by round (keep.py): they outlive a checkout
XTB = ROOT / "experiments/xtb_data/data/xtb_ac_ala3_nhme_500K.npz"  # committed (its README: why)
XTB_SUMMARY = ROOT / "experiments/results/xtb_data/ac_ala3_nhme_500K_summary.json"  # names the set (sha256)
TARGET_F = 0.12  # eV/Å, test force MAE (fixed before the runs)
SELECTION = {"al": "deviation", "random": "random", "pool": "pool", "qbc": "pool_deviation"}
PAIRS = (("al", "random"), ("qbc", "pool"))  # (active learning, its random-selection reference)
# The pool pair trains every round for POOL_STEPS steps (warm-started rounds too): the al and
# random curves fell only from 0.35 to 0.32 eV/Å while their labels quadrupled, with rounds of
# 1000 / 300 steps (12 epochs of 200 labels at batch 8), so their error measured the training
# budget more than the labels.  3000 steps are 120 epochs of 200 labels.  Set before any pool or
# qbc run; the al / random pair keeps config.yaml's budget, so the two pairs are not compared.
POOL_STEPS = 3000
N_INITIAL, N_TEST = 50, 500


def _load_xtb():
    if not XTB.exists():
        raise SystemExit(f"{XTB} missing: generate it with experiments/xtb_data/gen_xtb.py (see its README)")
    return np.load(XTB)


def _frames(d, idx):
    ef = units.energy_factor(str(d["e_unit"]))  # the sGDML-style file stores kcal/mol: to eV
    if str(d["r_unit"]) != "Angstrom":
        raise SystemExit(f"{XTB}: lengths in {d['r_unit']}, expected Angstrom")
    out = []
    for k in idx:
        a = Atoms(numbers=d["z"], positions=d["R"][k])
        a.info["energy"] = float(d["E"][k]) * ef  # eV
        a.info["xtb_frame"] = int(k)
        a.arrays["forces"] = d["F"][k] * ef  # eV/Å
        out.append(a)
    return out


def _initial_indices(r, half):
    return np.sort(np.random.default_rng(r).choice(half, N_INITIAL, replace=False))


def pool_path(r) -> Path:
    return DATA / f"pool_{r}.extxyz"


def pool_file(r):
    """The pool arm's frames for repeat ``r``: the first half of the trajectory less the
    initial frames of that repeat (written once)."""
    path = pool_path(r)
    if not path.exists():
        d = _load_xtb()
        half = len(d["E"]) // 2
        rest = np.setdiff1d(np.arange(half), _initial_indices(r, half))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two arms may start at once: one writer each
        ase.io.write(tmp, _frames(d, rest), format="extxyz")
        tmp.replace(path)
    return path


def prepare(repeats):
    d = _load_xtb()
    half = len(d["E"]) // 2
    DATA.mkdir(parents=True, exist_ok=True)

    def frames(idx):
        return _frames(d, idx)

    test = np.random.default_rng(1000).choice(np.arange(half, len(d["E"])), N_TEST, replace=False)
    ase.io.write(DATA / "test.extxyz", frames(np.sort(test)), format="extxyz")
    for r in repeats:
        ase.io.write(DATA / f"initial_{r}.extxyz", frames(_initial_indices(r, half)), format="extxyz")
    (DATA / "settings.json").write_text(json.dumps({"source": str(XTB.relative_to(ROOT)), "n_initial": N_INITIAL,
                                                   "n_test": N_TEST, "initial_from": f"frames [0, {half})",
                                                   "test_from": f"frames [{half}, {len(d['E'])}), seed 1000",
                                                   "repeats": list(repeats)}, indent=1))
    print(f"wrote {DATA}")


def arm_config(base: dict, arm: str, r: int) -> dict:
    """The ``lrnn al`` config of one arm and repeat, from ``config.yaml``'s ``base``."""
    cfg = json.loads(json.dumps(base))
    cfg["al"].update(initial=str(DATA / f"initial_{r}.extxyz"), test=str(DATA / "test.extxyz"), seed=r,
                     selection=SELECTION[arm])
    if arm in ("pool", "qbc"):
        cfg["al"]["pool"] = str(pool_path(r))
        cfg["train"]["max_steps"] = cfg["al"]["warm_steps"] = POOL_STEPS
    if arm == "qbc":  # reference MD frames: nothing to keep out (levels relative to the median)
        cfg["al"].update(trust_lo=0.0, trust_hi=1000.0, stop_deviation=1000.0, pool_shortlist=4)
    cfg["train"]["seed"] = r
    cfg["output"] = str(RUNS / f"{arm}_{r}")
    return cfg


def run(repeats, arms):
    base = yaml.safe_load((HERE / "config.yaml").read_text())
    for r in repeats:
        for arm in arms:
            cfg = arm_config(base, arm, r)
            on_round = None
            if "pool" in cfg["al"]:  # kept in the repository round by round, resumed from there
                out, kept, pool = Path(cfg["output"]), KEEP / f"{arm}_{r}", pool_file(r)
                if keep.restore(out, kept, pool):
                    print(f"{arm} repeat {r}: restored from {kept}", flush=True)

                def on_round(rec, out=out, kept=kept, pool=pool):
                    keep.save(out, kept, pool)
            al, rc = load_al_config(cfg)
            print(f"{arm} repeat {r}", flush=True)
            for rec in run_al(al, rc, on_round=on_round):
                print(json.dumps({k: rec.get(k) for k in ("round", "n_labels", "test_force_mae_eV_per_A")}), flush=True)


def _curve(path):
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return [(int(r["n_labels"]), float(r["test_force_mae_eV_per_A"])) for r in rows if r.get("test_force_mae_eV_per_A")]


def _labels_to_target(curve):
    """The labels at the first round whose test force MAE reaches ``TARGET_F`` (None: never)."""
    return next((n for n, f in curve if f <= TARGET_F), None)


def _label_stats(path, test_e):
    """Where the labelled frames lie against the test frames: their mean xTB energy above the
    test mean in units of the test energies' std, and the median of max |F| (eV/Å)."""
    frames = ase.io.read(path, ":") if path.exists() and path.stat().st_size else []
    if not frames:
        return None
    e = np.array([a.get_potential_energy() for a in frames])
    return {"n": len(frames), "energy_above_test_mean_in_test_std": float((e.mean() - test_e.mean()) / test_e.std()),
            "median_max_abs_force_eV_per_A": float(np.median([np.abs(a.get_forces()).max() for a in frames]))}


def compare(active: list, reference: list) -> dict:
    """Labels an active arm needs against its random reference arm (complete runs): (a) the
    mean over repeats of the labels at which each reaches ``TARGET_F`` and their ratio, when
    every run of both reaches it; (b) the labels the active runs need to reach the reference
    arm's mean final error, against the reference's mean final labels."""
    out = {"active_runs": len(active), "reference_runs": len(reference)}
    need_a = [r["labels_to_target"] for r in active]
    need_r = [r["labels_to_target"] for r in reference]
    if need_a and need_r and all(x is not None for x in need_a + need_r):
        out["ratio"] = float(np.mean(need_a) / np.mean(need_r))
    ends = [r["curve"][-1] for r in reference]
    if ends and active:
        target_b = float(np.mean([f for _, f in ends]))
        got = [next((n for n, f in r["curve"] if f <= target_b), None) for r in active]
        out["target_b"] = {"force_mae_eV_per_A": target_b, "reference_labels": float(np.mean([n for n, _ in ends])),
                           "active_labels": got}
        if all(x is not None for x in got):
            out["target_b"]["ratio"] = float(np.mean(got) / np.mean([n for n, _ in ends]))
    if active and reference:  # (c): every run reaches it, so the ratio is always measured
        target_c = max(r["curve"][-1][1] for r in active + reference)
        need = [[_labels_at(r["curve"], target_c) for r in runs] for runs in (active, reference)]
        out["target_c"] = {"force_mae_eV_per_A": target_c, "active_labels": need[0], "reference_labels": need[1],
                           "ratio": float(np.mean(need[0]) / np.mean(need[1]))}
    return out


def _labels_at(curve, target):
    """Labels at which a learning curve first reaches ``target``, interpolated linearly in
    labels between the two rounds that bracket it (None: never)."""
    if curve and curve[0][1] <= target:
        return float(curve[0][0])
    for (n0, f0), (n1, f1) in zip(curve, curve[1:]):
        if f1 <= target:
            return float(n0 + (n1 - n0) * (f0 - target) / (f0 - f1))
    return None


def committee_on_test(run_dir: Path) -> dict | None:
    """How well the final committee's deviation ranks its own test errors
    (:func:`lrnn.evaluate.evaluate`): per-structure Spearman of largest force error against
    largest force deviation, and the members' error correlation.  Query by committee can
    only pick the frames a model gets wrong if these rank them."""
    ckpt = run_dir / "final" / "model" / "checkpoint"
    if not ckpt.exists():
        return None
    m = evaluate(ckpt, str(DATA / "test.extxyz"), unit="eV")
    return {k: m[k] for k in ("force_mae", "force_spearman", "member_error_correlation", "mean_model_deviation")}


def carry_forward(arms: dict) -> None:
    """Add to ``arms`` ({arm: [run entries]}) the al / random runs of the previous
    ``results.json`` that it lacks, marked ``carried``: run directories live under the
    git-ignored ``runs/``, so a new checkout has none of an earlier one's, and a report must
    not drop them.  The pool arms are restored from ``KEEP`` instead (runs on an earlier xTB
    set: ``superseded``)."""
    path = RESULTS / "results.json"
    if not path.exists():
        return
    have = {r["run"] for v in arms.values() for r in v}
    for arm, runs in json.loads(path.read_text())["arms"].items():
        for r in runs if arm in ("al", "random") else []:
            if r["run"] not in have:
                arms.setdefault(arm, []).append(dict(r, carried=True))


def superseded() -> dict:
    """Runs kept from an earlier xTB set (``RESULTS/superseded_xtb_<sha>/<arm>_<r>/``, the
    ``KEEP`` layout): their curves, reported beside the current runs and never pooled with them."""
    out = {}
    for d in sorted(RESULTS.glob("superseded_xtb_*")):
        runs = {p.parent.name: _curve(p) for p in sorted(d.glob("*/al_metrics.csv"))}
        out[d.name.removeprefix("superseded_xtb_")] = {
            name: {"curve": c, "labels_to_target": _labels_to_target(c)} for name, c in runs.items()}
    return out


def report():
    test = ase.io.read(DATA / "test.extxyz", ":")
    test_e = np.array([a.get_potential_energy() for a in test])
    rounds = int(yaml.safe_load((HERE / "config.yaml").read_text())["al"]["rounds"])
    xtb_set = json.loads(XTB_SUMMARY.read_text())["arrays_sha256"]
    res = {"target_force_mae_eV_per_A": TARGET_F, "rounds": rounds, "arms": {}, "xtb_set_sha256": xtb_set,
           "xtb_set_of_carried_runs": "the first set (2026-11-30), not kept",
           "test_frames": {"n": len(test), "median_max_abs_force_eV_per_A":
                           float(np.median([np.abs(a.get_forces()).max() for a in test]))}}
    for kept in sorted(KEEP.glob("*/state.json")):  # pool-arm runs kept in the repository
        name = kept.parent.name
        keep.restore(RUNS / name, kept.parent, pool_file(int(name.rsplit("_", 1)[1])))
    colours = {"al": "C0", "random": "C1", "pool": "C2", "qbc": "C3"}
    for arm in colours:
        res["arms"][arm] = []
        for p in sorted(RUNS.glob(f"{arm}_*/al_metrics.csv")):
            c = _curve(p)
            res["arms"][arm].append({"run": p.parent.name, "curve": c,
                                     "labels_to_target": _labels_to_target(c),
                                     "complete": len(c) == rounds + 1,  # all rounds and the final training
                                     "labelled_frames": _label_stats(p.parent / "labels.extxyz", test_e)})
            if arm in ("pool", "qbc") and len(c) == rounds + 1:
                res["arms"][arm][-1]["final_committee_on_test"] = committee_on_test(p.parent)
    carry_forward(res["arms"])
    res["arms"] = {arm: sorted(v, key=lambda x: x["run"]) for arm, v in res["arms"].items()}
    res["superseded"] = superseded()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for sha, runs in res["superseded"].items():
        for name, run_ in runs.items():
            c = run_["curve"]
            ax.plot([n for n, _ in c], [f for _, f in c], "x--", color=colours[name.rsplit("_", 1)[0]], alpha=0.35,
                    label=f"{name} (xTB set {sha[:8]})")
    for arm, runs in res["arms"].items():
        for k, run_ in enumerate(runs):
            c = run_["curve"]
            ax.plot([n for n, _ in c], [f for _, f in c], "o-", color=colours[arm], alpha=0.7,
                    label=arm if k == 0 else None)
    done = {a: [r for r in v if r["complete"]] for a, v in res["arms"].items()}  # runs still going: curves only
    need = {a: [r["labels_to_target"] for r in v] for a, v in done.items()}
    res["pairs"] = {f"{act}/{ref}": compare(done.get(act, []), done.get(ref, [])) for act, ref in PAIRS}
    old = res["pairs"]["al/random"]  # the keys the first report wrote
    if "ratio" in old:
        res["ratio_al_to_random"] = old["ratio"]
    if "target_b" in old:
        tb = old["target_b"]
        res["target_b"] = {"force_mae_eV_per_A": tb["force_mae_eV_per_A"], "random_labels": tb["reference_labels"],
                           "al_labels": tb["active_labels"]} | ({"ratio_al_to_random": tb["ratio"]} if "ratio" in tb else {})
    ax.axhline(TARGET_F, color="k", ls=":", lw=0.8, label="target")
    ax.set(xlabel="labelled configurations", ylabel="test force MAE (eV/Å)", yscale="log")
    ax.legend()
    RESULTS.mkdir(parents=True, exist_ok=True)
    _save(plt, fig, [ax], RESULTS / "error_vs_labels.png")
    (RESULTS / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({a: need[a] for a in need}), res.get("ratio_al_to_random"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["prepare", "run", "report"])
    p.add_argument("--repeats", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=["al", "random"], choices=sorted(SELECTION))
    a = p.parse_args()
    {"prepare": lambda: prepare(a.repeats), "run": lambda: run(a.repeats, a.arms), "report": report}[a.stage]()


if __name__ == "__main__":
    main()
