"""Local models at equal training time on rMD17 aspirin split 01 (issue 20): each run trains
one config for a wall-clock budget on the cores it is given (the time schedule decays the
learning rate over that budget), then evaluates the best-on-validation checkpoint on the
1000 test configurations.  Runs meant to be compared are started together, one per core
(``taskset``), so that they share the machine's load.

Usage (one run per core, side by side):
    taskset -c 0 python experiments/local_models/timed_runs.py run --name reann_10min \\
        --config experiments/local_models/aspirin_reann.yaml --minutes 10 &
    taskset -c 1 python experiments/local_models/timed_runs.py run --name deeppot_10min \\
        --config experiments/aspirin/config.yaml --minutes 10 &
    python experiments/local_models/timed_runs.py report

``commit NAME`` copies run NAME's checkpoint with its record beside it to
``experiments/results/local_models/aspirin_eann/checkpoint`` (``lrnn.load``; the EANN-family
run chosen on validation) or, for the MACE-like model, to ``aspirin_equivariant/checkpoint``
(the 2-hour run on both cores, issue 20):

    python experiments/local_models/timed_runs.py run --name mace_stage2_120min \
        --config experiments/local_models/aspirin_equivariant_stage2.yaml --minutes 120
    python experiments/local_models/timed_runs.py commit mace_stage2_120min

(the committed run; ``mace_120min`` with ``aspirin_equivariant.yaml``, no moving average and
no second stage, is the earlier one, shown beside it in the README)

``pilot`` trains like ``run`` with ``--set train.KEY=VALUE`` overrides (a warm start,
say) and evaluates the validation split only, into ``results/pilot_<name>.json``: settings
are chosen on those records before any test error of the run they feed is seen.

``report`` also evaluates each run's checkpoint on its 50 validation configurations (once,
stored in the record): variants of one model family are chosen by validation force MAE.

``run --snapshots 20 60`` also tests the best-on-validation weights at those minutes (the
peer benchmark's figures, ``experiments/bench_local_models.py``, for the other local models):

    taskset -c 0 python experiments/local_models/timed_runs.py run --name mace_60min \
        --config experiments/local_models/aspirin_equivariant_stage2.yaml --minutes 60 --snapshots 20 60

``--molecule paracetamol`` runs a config on another rMD17 molecule's files of the same split,
with its model and training settings unchanged (the record names the molecule):

    taskset -c 1 python experiments/local_models/timed_runs.py run --name reann_paracetamol_60min \
        --config experiments/local_models/aspirin_reann.yaml --molecule paracetamol --minutes 60 --snapshots 20 60

Each run writes ``results/timed_<name>.json`` (config, command, cores, load average before
and after, training summary, validation curve, test errors, commit); ``report`` writes ``results/timed.md``
from all of them.  Checkpoints stay in ``runs/timed/<name>`` (git-ignored).
"""

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lrnn import checkpoint
from lrnn.evaluate import evaluate
from lrnn.train import load_config, train
from lrnn.train.data import load_data, resolve_path
from lrnn.train.metrics import read_metrics
from lrnn.units import KCAL_MOL

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"


def run(name: str, config: Path, minutes: float, work: Path = ROOT / "runs" / "timed", overrides=(),
        test: bool = True, snapshots=(), molecule: str | None = None) -> dict:
    """Train ``config`` for ``minutes`` and record it; ``overrides``: ``train.KEY=VALUE``
    strings (YAML values); ``test=False`` (a pilot) evaluates the validation split only;
    ``snapshots``: minutes at which the best-on-validation weights so far are kept and
    tested too (``at``), as the peer benchmark does; ``molecule``: another rMD17 molecule
    than the config's, same split, sizes and settings (``for_molecule``)."""
    cfg = load_config(config)
    if molecule is not None:
        cfg = for_molecule(cfg, molecule)
    over = parse_overrides(overrides)
    cfg["train"] = dataclasses.replace(cfg["train"], **over, snapshot_at_s=tuple(60.0 * t for t in snapshots))
    cfg["train"].schedule = "time"
    cfg["train"].max_time_s = 60.0 * minutes
    cfg["output"] = str(work / name)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    summary = train(cfg, quiet=True)
    wall = time.perf_counter() - t0
    ckpt = Path(cfg["output"]) / "checkpoint"
    rec = {"name": name, "config": str(Path(config).resolve().relative_to(ROOT)), "molecule": molecule_of(cfg),
           "model": cfg["model"],
           "overrides": over, "minutes": minutes, "train_summary": summary, "wall_time_s": wall,
           "command": " ".join(sys.argv), "cores": sorted(os.sched_getaffinity(0)), "load_avg_before": load_before,
           "load_avg_after": os.getloadavg(), "machine": platform.processor() or platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    cwd=ROOT).stdout.strip()}
    rec["validation"] = validation_errors(rec, work)
    rec["val_curve"] = val_curve(Path(cfg["output"]) / "metrics.csv")
    if test:
        test_path = resolve_path(cfg["data"]["test"], cfg["base"])
        rec["test"] = evaluate(ckpt, test_path)
        snaps = {t: Path(cfg["output"]) / f"checkpoint_at_{60.0 * t:g}s" for t in snapshots}
        rec["at"] = {f"{t:g}": evaluate(p if p.exists() else ckpt, test_path) for t, p in snaps.items()
                     if p.exists() or t >= minutes}  # a snapshot at the budget's end: the final best
    write(rec, "timed" if test else "pilot")
    return rec


def molecule_of(cfg: dict) -> str:
    """The rMD17 molecule of a config's training file (``rmd17_<molecule>_train_<split>.npz``)."""
    m = re.fullmatch(r"rmd17_([a-z]+)_train_\d+\.npz", Path(str(cfg["data"]["train"])).name)
    if m is None:
        raise SystemExit(f"data.train {cfg['data']['train']!r} is not an rMD17 split file (rmd17_<molecule>_train_NN.npz)")
    return m[1]


def for_molecule(cfg: dict, molecule: str) -> dict:
    """``cfg`` with its rMD17 train and test files those of ``molecule`` (same split; sizes,
    seed, model and training settings unchanged)."""
    old = molecule_of(cfg)
    data = {**cfg["data"]}
    for key in ("train", "test"):
        path = Path(str(data[key]))
        data[key] = str(path.with_name(path.name.replace(f"rmd17_{old}_", f"rmd17_{molecule}_", 1)))
        if not resolve_path(data[key], cfg["base"]).exists():
            raise SystemExit(f"--molecule {molecule}: no file {data[key]} (from {path.name})")
    return {**cfg, "data": data}


def parse_overrides(overrides) -> dict:
    """``train.KEY=VALUE`` strings to {KEY: VALUE} (VALUE read as YAML)."""
    over = {}
    for kv in overrides:
        key, _, val = kv.partition("=")
        if not key.startswith("train.") or not val:
            raise SystemExit(f"--set {kv!r}: expected train.KEY=VALUE")
        over[key[len("train."):]] = yaml.safe_load(val)
    return over


def val_curve(metrics_csv: Path) -> list:
    """[minutes since training started, validation energy MAE (kcal/mol, before the final
    energy-shift re-fit), validation force MAE (kcal/mol/Å)] at each validation of a run."""
    return [[m["time_s"] / 60, m["val_energy_mae_eV"] / KCAL_MOL, m["val_force_mae_eV_per_A"] / KCAL_MOL]
            for m in read_metrics(metrics_csv)]


def validation_errors(rec: dict, work: Path = ROOT / "runs" / "timed") -> dict:
    """Errors of the run's checkpoint on its own validation split (never the test set)."""
    cfg = load_config(ROOT / rec["config"])
    if rec.get("molecule", "aspirin") != molecule_of(cfg):
        cfg = for_molecule(cfg, rec["molecule"])
    val = load_data(cfg["data"], cfg["base"])["val"]
    return evaluate(work / rec["name"] / "checkpoint", val)


def write(rec: dict, kind: str = "timed") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f"{kind}_{rec['name']}.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1, default=float))
    os.replace(tmp, RESULTS / f"{kind}_{rec['name']}.json")


def snapshot_cell(rec: dict) -> str:
    return "; ".join(f"{k}: {v['energy_mae']:.3f} / {v['force_mae']:.3f}" for k, v in rec.get("at", {}).items())


def report(validate: bool = True) -> str:
    recs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("timed_*.json"))]
    for rec in recs:
        if validate and "validation" not in rec:
            rec["validation"] = validation_errors(rec)
            write(rec)
    md = ["# Local models at equal training time, rMD17 split 01 (aspirin unless the run names another molecule)", "",
          "Written by `python experiments/local_models/timed_runs.py report` from `timed_*.json` (each "
          "record has its command, cores and load).  Test errors on the 1000 test configurations: energy "
          "MAE (kcal/mol), force MAE per component (kcal/mol/Å).", "",
          "| run | model | minutes | cores | load before / after | steps | parameters | val F MAE | E MAE | F MAE "
          "| E / F at T min (snapshots) | date |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        s, t = r["train_summary"], r["test"]
        mol = r.get("molecule", "aspirin")
        label = r["name"] if mol == "aspirin" else f"{r['name']} ({mol})"
        model = ", ".join(f"{k} {v}" for k, v in r["model"].items() if k != "type_map")
        md.append(f"| {label} | {model} | {r['minutes']:g} | {','.join(map(str, r['cores']))} | "
                  f"{r['load_avg_before'][0]:.1f} / {r['load_avg_after'][0]:.1f} | {s['steps']} | "
                  f"{s.get('n_parameters', '')} | "
                  f"{r['validation']['force_mae'] if 'validation' in r else float('nan'):.3f} | {t['energy_mae']:.3f} | {t['force_mae']:.3f} | "
                  f"{snapshot_cell(r)} | {r['date']} |")
    pilots = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("pilot_*.json"))]
    if pilots:
        md += ["", "Pilots (`pilot`: validation errors only, kcal/mol and kcal/mol/Å, on the 50 validation "
               "configurations; the settings they chose are named in the config that uses them):", "",
               "| pilot | config | overrides | minutes | cores | steps | val E MAE | val F MAE | date |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in pilots:
            over = ", ".join(f"{k} {v}" for k, v in r["overrides"].items())
            md.append(f"| {r['name']} | {r['config']} | {over} | {r['minutes']:g} | {','.join(map(str, r['cores']))} | "
                      f"{r['train_summary']['steps']} | {r['validation']['energy_mae']:.3f} | "
                      f"{r['validation']['force_mae']:.3f} | {r['date']} |")
    text = "\n".join(md) + "\n"
    (RESULTS / "timed.md").write_text(text)
    return text


COMMITTED = {"eann": "aspirin_eann", "mace": "aspirin_equivariant"}  # model.type -> results/local_models/<dir>


def commit(name: str, dest: Path | None = None) -> Path:
    """Copy run ``name``'s checkpoint and record (write, then rename) to ``dest``, by default
    the committed place for its model type (``COMMITTED``)."""
    rec = json.loads((RESULTS / f"timed_{name}.json").read_text())
    if dest is None:
        if rec["model"]["type"] not in COMMITTED:
            raise SystemExit(f"{name}: no committed place for model type {rec['model']['type']!r}; "
                             f"known: {sorted(COMMITTED)}")
        dest = ROOT / "experiments" / "results" / "local_models" / COMMITTED[rec["model"]["type"]]
    out = checkpoint.copy(ROOT / "runs" / "timed" / name / "checkpoint", dest / "checkpoint")
    shutil.copy(RESULTS / f"timed_{name}.json", dest / "record.json")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--minutes", type=float, required=True)
    r.add_argument("--snapshots", type=float, nargs="*", default=[], help="minutes: also test the best weights then")
    r.add_argument("--molecule", help="another rMD17 molecule than the config's (same split and settings)")
    pl = sub.add_parser("pilot")
    for arg in ("--name", "--config", "--minutes"):
        pl.add_argument(arg, required=True, type={"--config": Path, "--minutes": float}.get(arg, str))
    pl.add_argument("--set", action="append", default=[], metavar="train.KEY=VALUE")
    sub.add_parser("report")
    c = sub.add_parser("commit")
    c.add_argument("name")
    a = ap.parse_args()
    if a.cmd == "run":
        print(json.dumps(run(a.name, a.config, a.minutes, snapshots=a.snapshots, molecule=a.molecule)["test"], indent=1, default=float))
    elif a.cmd == "pilot":
        rec = run(a.name, a.config, a.minutes, overrides=a.set, test=False)
        print(json.dumps(rec["validation"], indent=1, default=float))
    elif a.cmd == "commit":
        print(commit(a.name))
    else:
        print(report())
