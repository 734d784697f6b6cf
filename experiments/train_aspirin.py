"""rMD17 aspirin split 01: train DeepPot-SE (1000 training configurations, time budget
from the config, at most 1 hour on 2 cores) and test on the 1000 test configurations.

Usage:  python experiments/train_aspirin.py [--config experiments/aspirin/config.yaml]
                                            [--max-time SECONDS] [--resume]
Writes experiments/results/aspirin/{results.md,results.json,learning_curve.png,
parity_test.png,metrics.csv}.
"""

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import jax

from lrnn.evaluate import evaluate, format_table
from lrnn.train import load_config, train
from lrnn.train.data import resolve_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "aspirin"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(HERE / "aspirin" / "config.yaml"))
    ap.add_argument("--max-time", type=float)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config)
    for key in ("train", "test"):
        p = resolve_path(cfg["data"][key], cfg["base"])
        if not p.exists():
            raise SystemExit(f"rMD17 aspirin data not found at {p} (needs ../shared/data/rmd17)")
    if args.max_time:
        cfg["train"].max_time_s = args.max_time
    t0 = time.perf_counter()
    summary = train(cfg, resume=args.resume)
    out = Path(cfg["output"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = evaluate(out / "checkpoint", resolve_path(cfg["data"]["test"], cfg["base"]),
                   parity_png=RESULTS / "parity_test.png", unit="kcal/mol")
    res.update(train_time_s=summary["train_time_s"], total_time_s=time.perf_counter() - t0,
               steps=summary["steps"], n_train=summary["n_train"], n_val=summary["n_val"],
               n_parameters=summary["n_parameters"], cpu_cores=jax.local_device_count("cpu"),
               machine=platform.processor() or platform.machine(), config=str(args.config),
               bars={"energy_mae_kcal_mol": 0.5, "force_mae_kcal_mol_A": 1.5, "time_s": 3600})
    res["meets_bars"] = bool(res["energy_mae"] <= 0.5 and res["force_mae"] <= 1.5 and res["total_time_s"] <= 3600)
    (RESULTS / "results.json").write_text(json.dumps(res, indent=1))
    for f in ("learning_curve.png", "metrics.csv"):
        if (out / f).exists():
            shutil.copy(out / f, RESULTS / f)
    table = format_table(res, "DeepPot-SE on rMD17 aspirin split 01 (1000 test configurations)")
    md = ["# rMD17 aspirin, split 01", "", "Command: `python experiments/train_aspirin.py`", "", "```", table,
          "```", "", f"Training: {summary['steps']} steps in {summary['train_time_s']:.0f} s "
          f"({res['n_parameters']} parameters); total with evaluation {res['total_time_s']:.0f} s.",
          f"Acceptance (E MAE <= 0.5 kcal/mol, F MAE <= 1.5 kcal/mol/Å, <= 1 h on 2 cores): "
          f"{'met' if res['meets_bars'] else 'NOT met'}.", "", "![learning curve](learning_curve.png)",
          "![parity](parity_test.png)"]
    (RESULTS / "results.md").write_text("\n".join(md) + "\n")
    print(table)


if __name__ == "__main__":
    main()
