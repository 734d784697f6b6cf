"""The thesis protocol's training schedule and input scaling, chosen on validation data (issue 19).

Energy-only DeepPot-SE training on 7,706 configurations stalled near the predict-the-mean
error after the planned 30,000 steps (``energy_only_plateau.py``).  This script trains the local
model on the thesis protocol's data (rMD17 paracetamol, MD17 labels, the 80/10/10 split of
``thesis_table.py``: 7,706 fitted, 963 validation) for a long schedule, once plain and once
with ``model.fit_norm``, and records both validation curves.  No test configuration is read.

    python experiments/thesis_table/schedule_choice.py run --variant plain       # ~40 min, one core
    python experiments/thesis_table/schedule_choice.py run --variant fit_norm
    python experiments/thesis_table/schedule_choice.py report  # -> experiments/results/thesis_table/schedule_choice.json

The two runs can go side by side, one per core (``taskset -c 0`` / ``-c 1``).  ``report``
reads each run's directory, checks that the run used this script's configuration (the
checkpoint stores it), and writes the curves, the best validation error of each variant,
and the choice (the lower best validation energy MAE).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

from thesis_table import BASE_MODEL, HERE, OUT, PREFS, prepare  # noqa: E402

from lrnn.train import load_config, train  # noqa: E402

RUNS = HERE / "runs" / "schedule"
STEPS = 100_000
KCAL = 0.0433641043  # eV per kcal/mol (lrnn.units.KCAL_MOL)
VARIANTS = {"plain": {}, "fit_norm": {"fit_norm": True}}
TRAIN = {"batch_size": 8, "lr_start": 2e-3, "lr_stop": 3e-5, "decay_steps": 200, "max_steps": STEPS,
         "checkpoint_every_s": 300, "progress": False, "seed": 0, **PREFS[False]}


def config(variant: str) -> dict:
    data = prepare("paracetamol", "md17", "thesis", HERE / "data")[0]
    data = {k: v for k, v in data.items() if k != "test"}  # validation only: no test set is loaded
    return {"data": data, "model": {**BASE_MODEL, **VARIANTS[variant]}, "train": dict(TRAIN),
            "output": str(RUNS / variant)}


def read_pilot(run: Path, want_train: dict) -> tuple[dict, list[dict], dict]:
    """A pilot run's stored checkpoint config, its metrics.csv rows and its train summary;
    exits naming the key when the stored train config differs from ``want_train``."""
    stored = json.loads((run / "checkpoint" / "lrnn.json").read_text())
    for k, v in want_train.items():
        if stored["train"]["config"].get(k) != v:
            raise SystemExit(f"{run}: train.{k} = {stored['train']['config'].get(k)!r}, this script uses {v!r}")
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return stored, rows, json.loads((run / "train_summary.json").read_text())


def read_run(variant: str) -> dict:
    run = RUNS / variant
    want = config(variant)
    stored, rows, summary = read_pilot(run, want["train"])
    model = {k: v for k, v in stored["model"].items() if k != "type_map"}
    if model != want["model"]:
        raise SystemExit(f"{run}: model {model} is not this script's {want['model']}")
    for k, v in want["data"].items():  # the data config is stored as strings
        got, v = stored["data"].get(k), Path(v).name if k == "train" else str(v)
        if (Path(got).name if k == "train" else got) != v:
            raise SystemExit(f"{run}: data.{k} = {got!r}, this script uses {v!r}")
    curve = [{"step": int(r["step"]), "time_s": float(r["time_s"]), "lr": float(r["lr"]),
              "val_energy_mae_kcal_mol": float(r["val_energy_mae_eV"]) / KCAL} for r in rows]
    best = min(curve, key=lambda r: r["val_energy_mae_kcal_mol"])
    best30k = min((r for r in curve if r["step"] <= 30_000), key=lambda r: r["val_energy_mae_kcal_mol"])
    return {"variant": variant, "model": stored["model"], "train": stored["train"]["config"],
            "data": stored["data"], "steps": curve[-1]["step"],
            "train_time_s": summary["train_time_s"], "best": best,
            "best_up_to_30000_steps": best30k["val_energy_mae_kcal_mol"], "curve": curve}


def table_record(molecule: str, labels: str, protocol: str, variant: str, seed: int) -> dict:
    """The finished ``thesis_table.py`` record of one run (results.json); exits naming it when absent."""
    records = json.loads((OUT / "results.json").read_text())
    records = records["records"] if isinstance(records, dict) else records
    for r in records:
        if (r["molecule"], r["labels"], r["protocol"], r["variant"], r["seed"]) == \
                (molecule, labels, protocol, variant, seed) and r["status"] == "ok":
            return r
    raise SystemExit(f"results.json has no finished {molecule} {labels} {protocol} {variant} seed-{seed} record")


def write_pilot_record(name: str, what: str, **fields) -> dict:
    """Write ``OUT/<name>.json`` (a temporary file, then renamed) holding ``what``, the command
    line, date and host, then ``fields``; returns the record."""
    rec = {"what": what, "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), **fields}
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f"{name}.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, OUT / f"{name}.json")
    return rec


def cmd_report(args):
    runs = [read_run(v) for v in VARIANTS]
    choice = min(runs, key=lambda r: r["best"]["val_energy_mae_kcal_mol"])["variant"]
    write_pilot_record("schedule_choice", "thesis protocol (energy only), rMD17 paracetamol with MD17 labels, "
                       "local DeepPot-SE, seed 0: validation energy MAE (963 configurations) against training steps, "
                       "plain and fit_norm", choice=choice,
                       rule="the variant with the lower best validation energy MAE over the whole schedule", runs=runs)
    for r in runs:
        print(f"{r['variant']:9s} best {r['best']['val_energy_mae_kcal_mol']:.3f} kcal/mol at step "
              f"{r['best']['step']}; best up to 30k steps {r['best_up_to_30000_steps']:.3f}")
    print("choice:", choice)


def pilot_main(doc, variants, runs: Path, config, report, argv=None):
    """The command line of a validation-only pilot: ``run --variant V`` trains (resuming a
    run left in ``runs/V``) and prints its summary; ``report`` calls ``report(args)``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("--variant", choices=sorted(variants), required=True)
    sub.add_parser("report")
    args = ap.parse_args(argv)
    if args.cmd == "report":
        return report(args)
    t0 = time.time()
    summary = train(load_config(config(args.variant)), resume=(runs / args.variant / "last").exists(), quiet=True)
    print(json.dumps({**summary, "wall_s": time.time() - t0}))


def main(argv=None):
    pilot_main(__doc__, VARIANTS, RUNS, config, cmd_report, argv)


if __name__ == "__main__":
    main()
