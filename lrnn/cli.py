"""The ``lrnn`` command: train, evaluate, al, demo (and ``md``, ``cm`` for MD and the C_m expansion)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import jax

from lrnn import bundle
from lrnn.al import load_al_config, run_al
from lrnn.cm.cli import main as cm_main
from lrnn.evaluate import evaluate, format_table
from lrnn.md_cli import main as md_main
from lrnn.train import distributed, load_config, train

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


def _train(args) -> int:
    if args.distributed or args.coordinator or args.num_processes is not None:
        rank, size = distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        logging.getLogger("lrnn").info("process %d of %d, %d devices in all", rank, size, jax.device_count())
    cfg = load_config(args.config)
    if args.output:
        cfg["output"] = args.output
    summary = train(cfg, resume=args.resume)
    print(json.dumps(summary, indent=1))
    print(f"best checkpoint: {Path(cfg['output']) / 'checkpoint'}")
    return 0


def _al(args) -> int:
    al, run = load_al_config(args.config)
    if args.output:
        run["output"] = args.output
    for rec in run_al(al, run, rounds=args.rounds):
        print(json.dumps(rec))
    return 0


def _combine(args) -> int:
    model, params, meta = bundle.combine(args.checkpoints)
    out = bundle.save(args.output, model, params, meta)
    print(f"committee of {meta['committee']} written to {out}")
    return 0


def _evaluate(args) -> int:
    kwargs = {}
    if args.energy_unit:
        kwargs["energy_unit"] = args.energy_unit
    res = evaluate(args.checkpoint, args.data, fmt=args.format, unit=args.unit,
                   parity_png=None if args.json and not args.parity else (args.parity or "parity.png"),
                   calibration_png=args.calibration, **kwargs)
    if args.json:
        print(json.dumps(res))
    else:
        print(format_table(res, f"{args.checkpoint} on {args.data}"))
        print(f"parity plot: {res['parity_plot']}")
        if "force_spearman" in res:
            print(f"committee of {res['committee']}: force Spearman {res['force_spearman']:.3f}, miscalibration "
                  f"area {res['miscalibration_area']:.3f} (recalibrated: "
                  f"{res.get('miscalibration_area_recalibrated', float('nan')):.3f})")
    return 0


def demo(config=DEMO_CONFIG, output: str | None = None, max_time_s: float | None = None) -> dict:
    """Train the default model on the embedded paracetamol data, evaluate on held-out
    configurations, print the results table and write plots."""
    cfg = load_config(config)
    if output:
        cfg["output"] = output
    if max_time_s is not None:
        cfg["train"].max_time_s = max_time_s
    t0 = time.perf_counter()
    summary = train(cfg)
    out = Path(cfg["output"])
    res = evaluate(out / "checkpoint", cfg["data"]["test"], parity_png=out / "parity_test.png",
                   unit=cfg["data"].get("report_energy_unit"))
    res["train_time_s"] = summary["train_time_s"]
    res["total_time_s"] = time.perf_counter() - t0
    (out / "demo_results.json").write_text(json.dumps(res, indent=1))
    print()
    print(format_table(res, "lrnn demo: DeepPot-SE on rMD17 paracetamol, held-out test configurations"))
    print(f"training {summary['steps']} steps in {summary['train_time_s']:.0f} s; "
          f"checkpoint {out / 'checkpoint'}; plots {out / 'learning_curve.png'}, {out / 'parity_test.png'}")
    return res


def _demo(args) -> int:
    demo(output=args.output, max_time_s=args.max_time)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "cm":
        return cm_main(argv[1:])
    if argv and argv[0] == "md":
        return md_main(argv[1:])
    p = argparse.ArgumentParser(prog="lrnn", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/last exactly where it stopped")
    t.add_argument("--output", help="override the output directory")
    t.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (jax.distributed; Slurm and Open MPI are detected)")
    t.add_argument("--coordinator", help="host:port of process 0 (implies --distributed)")
    t.add_argument("--num-processes", type=int, help="processes in the run (with --process-id)")
    t.add_argument("--process-id", type=int, help="this process's rank, 0..num_processes-1")
    t.set_defaults(func=_train)
    a = sub.add_parser("al", help="active learning: explore with a committee, label, retrain (lrnn.al)")
    a.add_argument("config", help="YAML with al, model, train, output sections")
    a.add_argument("--rounds", type=int, help="override al.rounds")
    a.add_argument("--output", help="override the output directory")
    a.set_defaults(func=_al)
    c = sub.add_parser("combine", help="one committee checkpoint from separately trained ones")
    c.add_argument("output", help="the committee checkpoint to write")
    c.add_argument("checkpoints", nargs="+", help="member checkpoints (same model config and data)")
    c.set_defaults(func=_combine)
    e = sub.add_parser("evaluate", help="errors of a checkpoint on a dataset")
    e.add_argument("checkpoint")
    e.add_argument("data", help="data file (npz, extxyz, RuNNer input.data, h5) or embedded:NAME")
    e.add_argument("--format", help="rmd17|sgdml|extxyz|runner|lode (default: from the file)")
    e.add_argument("--unit", help="energy unit of the report (default: the training data's)")
    e.add_argument("--energy-unit", help="energy unit of an extxyz file (default eV)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--parity", help="parity plot PNG path (default parity.png)")
    e.add_argument("--calibration", help="committees: calibration and error-uncertainty plot PNG path")
    e.set_defaults(func=_evaluate)
    d = sub.add_parser("demo", help="train and evaluate the default model on embedded data")
    d.add_argument("--output", help="output directory (default runs/demo)")
    d.add_argument("--max-time", type=float, help="training wall-clock budget in seconds")
    d.set_defaults(func=_demo)
    sub.add_parser("cm", help="neural C_m expansion tools (lrnn cm --help)")
    sub.add_parser("md", help="molecular dynamics with a checkpoint (lrnn md --help)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"lrnn {args.cmd}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
