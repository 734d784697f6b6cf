"""Committee of 4 DeepPot-SE models on rMD17 aspirin (issue 21): accuracy and calibration.

Trains ``aspirin_committee.yaml`` (resumable: ``--resume`` continues an interrupted run),
evaluates the committee on the 1000 test configurations of split 01 with
:func:`lrnn.evaluate.evaluate` (force errors per component; the committee's calibration:
``force_spearman``, ``miscalibration_area`` before and after the recalibration fitted on the
50 validation configurations, NLL), and writes into
``experiments/results/uncertainty/aspirin_committee/``: ``checkpoint`` (``lrnn.load``),
``results.json`` (with the command, wall time, machine load and commit), ``results.md`` and
``calibration.png`` / ``parity.png``.

Usage:  python experiments/uncertainty/aspirin_committee.py [--resume] [--evaluate-only]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lrnn.evaluate import evaluate
from lrnn.train import load_config, train
from lrnn.train.data import resolve_path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "aspirin_committee.yaml"
RESULTS = HERE.parent / "results" / "uncertainty" / "aspirin_committee"
BAR_SPEARMAN = 0.5


def commit_checkpoint(src: Path, results: Path):
    tmp = results / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(results / "checkpoint", ignore_errors=True)
    os.replace(tmp, results / "checkpoint")


def main(resume: bool, evaluate_only: bool, max_time: float | None = None, results: Path = RESULTS):
    cfg = load_config(CONFIG)
    if max_time:  # a smoke run: a shorter budget, its own run and results directories
        cfg["train"].max_time_s = max_time
        cfg["output"] = str(results / "run")
    out = Path(cfg["output"])
    t0 = time.perf_counter()
    summary = None
    if not evaluate_only:
        summary = train(cfg, resume=resume and (out / "last").exists(), quiet=True)
    wall = time.perf_counter() - t0
    results.mkdir(parents=True, exist_ok=True)
    commit_checkpoint(out / "checkpoint", results)
    res = evaluate(results / "checkpoint", resolve_path(cfg["data"]["test"], cfg["base"]), parity_png=results / "parity.png",
                   calibration_png=results / "calibration.png")
    meta = json.loads((results / "checkpoint" / "lrnn.json").read_text())
    rec = {"test": res, "train_summary": summary or json.loads((out / "train_summary.json").read_text()),
           "members": meta["committee"], "best_val_per_member": meta["train"]["best_val"],
           "calibration_fit": meta.get("calibration"), "bar_force_spearman": BAR_SPEARMAN,
           "met": res["force_spearman"] >= BAR_SPEARMAN, "wall_time_s": wall, "command": " ".join(sys.argv),
           "load_avg": os.getloadavg(), "machine": platform.processor() or platform.machine(),
           "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    cwd=HERE).stdout.strip()}
    (results / "results.json").write_text(json.dumps(rec, indent=1, default=float))
    s = rec["train_summary"]
    md = ["# Committee of 4 DeepPot-SE models, rMD17 aspirin split 01 (issue 21)", "",
          f"Command: `python experiments/uncertainty/aspirin_committee.py`; config `aspirin_committee.yaml` "
          f"({s['steps']} steps of the 4 members together, {s['train_time_s']:.0f} s; machine load "
          f"{rec['load_avg'][0]:.2f}).", "",
          "| quantity | value |", "|---|---|",
          f"| energy MAE (committee mean) | {res['energy_mae']:.3f} kcal/mol |",
          f"| force MAE (committee mean, per component) | {res['force_mae']:.3f} kcal/mol/Å |",
          f"| force Spearman (max atomic error vs max atomic deviation, 1000 structures) | "
          f"{res['force_spearman']:.3f} (bar ≥ {BAR_SPEARMAN}: {'met' if rec['met'] else 'not met'}) |",
          f"| miscalibration area, committee σ | {res['miscalibration_area']:.3f} |",
          f"| miscalibration area, recalibrated ({res['force_std_scale']:.2f} σ, fitted on validation) | "
          f"{res['miscalibration_area_recalibrated']:.3f} |",
          f"| NLL per component (eV/Å units), committee σ → recalibrated | {res['nll']:.3f} → "
          f"{res['nll_recalibrated']:.3f} |", "",
          "Plots: `calibration.png` (coverage and error against deviation), `parity.png`."]
    (results / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--evaluate-only", action="store_true")
    ap.add_argument("--smoke", type=float, metavar="S", help="a smoke run of S seconds into --results")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    main(a.resume, a.evaluate_only, a.smoke, a.results)
