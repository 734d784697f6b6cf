"""Cost of an energy-only training step: the energy-only path against the force path (issue 19).

The thesis protocol trains on energies alone.  The trainer then builds its loss from E
alone, without the position gradient and the double backward pass that force training
needs.  This script measures what that saves on the thesis protocol's model and data
(rMD17 paracetamol, MD17 labels, the local DeepPot-SE of ``thesis_table.py``): the same run
twice, once with force weight 0 (energy-only path) and once with force weight 1e-30 (the
force path, whose force term is negligible), and records the training time per step
(compilation excluded, validation included) and the validation energy MAE at the last step.

    taskset -c 0 python experiments/thesis_table/step_cost.py --steps 1500
    # -> experiments/results/thesis_table/step_cost.json

Run it on a quiet core: both arms go one after the other in one process, so they share the
machine's load, which the record stores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

from thesis_table import BASE_MODEL, HERE, OUT, PREFS, TRAIN, git, prepare  # noqa: E402

from lrnn.train import load_config, train  # noqa: E402
from lrnn.train.metrics import read_metrics  # noqa: E402

RUNS = HERE / "runs" / "step_cost"
KCAL = 0.0433641043  # eV per kcal/mol (lrnn.units.KCAL_MOL)


def config(arm: str, steps: int) -> dict:
    data = prepare("paracetamol", "md17", "thesis", HERE / "data")[0]
    data = {k: v for k, v in data.items() if k != "test"}  # validation only
    pf = 0.0 if arm == "energy_only" else 1e-30
    prefs = {**PREFS[False], "pref_f_start": pf, "pref_f_limit": pf}
    return {"data": data, "model": dict(BASE_MODEL),
            "train": {**TRAIN, **prefs, "seed": 0, "max_steps": steps, "checkpoint_every_s": 0},
            "output": str(RUNS / arm)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args(argv)
    arms = {}
    load0 = os.getloadavg()
    for arm in ("energy_only", "force_path"):
        shutil.rmtree(RUNS / arm, ignore_errors=True)
        cfg = config(arm, args.steps)
        t0 = time.perf_counter()
        s = train(load_config(cfg), quiet=True)
        arms[arm] = {"steps": s["steps"], "train_time_s": s["train_time_s"], "compile_s": s["compile_s"],
                     "ms_per_step": 1e3 * s["train_time_s"] / s["steps"], "wall_s": time.perf_counter() - t0,
                     "val_energy_mae_kcal_mol": read_metrics(RUNS / arm / "metrics.csv")[-1]["val_energy_mae_eV"] / KCAL,
                     "pref_f": cfg["train"]["pref_f_start"]}
        print(f"{arm}: {arms[arm]['ms_per_step']:.1f} ms/step over {s['steps']} steps", flush=True)
    rec = {"what": "training time per step, thesis protocol model (local DeepPot-SE, batch 8) on rMD17 "
                   "paracetamol with MD17 labels: energy-only path (force weight 0) vs force path (1e-30)",
           "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), "git_commit": git("rev-parse", "HEAD"),
           "lrnn_modified": bool(git("status", "--porcelain", "lrnn")), "loadavg_start": load0,
           "loadavg_end": os.getloadavg(), "affinity": sorted(os.sched_getaffinity(0)), "arms": arms,
           "speedup": arms["force_path"]["ms_per_step"] / arms["energy_only"]["ms_per_step"]}
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "step_cost.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, OUT / "step_cost.json")
    print(f"speed-up of the energy-only path: {rec['speedup']:.2f}x")


if __name__ == "__main__":
    main()
