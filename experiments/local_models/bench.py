"""Speed of the local models on rMD17 aspirin (21 atoms): energy+forces time per
configuration at batch 1 and 32, and training steps per second at batch 8 (Adam, E+F
loss), medians of repeated runs after compile, float32, all models in one process.

Usage (one core):
    taskset -c 0 python experiments/local_models/bench.py \\
        [--configs experiments/aspirin/config.yaml experiments/local_models/aspirin_equivariant.yaml] \\
        [--model '{"type": "mace", "channels": 32}' ...] [--repeats 5]
Writes experiments/local_models/results/bench.{md,json}.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrnn.data import read
from lrnn.nn import count_parameters
from lrnn.potential import batched_efv
from lrnn.train import load_config
from lrnn.train.data import resolve_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_deeppot import adam_step_runner, median_time, setup_model  # noqa: E402  (the shared timing loops)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def bench(model_cfg, ds, repeats, batch):
    model_cfg = dict(model_cfg, type_map=ds.elements)
    g, st, stats, inputs, labels = setup_model(model_cfg, ds)
    dev = jax.tree.map(jnp.asarray, (inputs, labels))
    row = {"model": model_cfg, "n_parameters": count_parameters(st)}
    for bs, inner in ((1, 20), (32, 3)):
        chunk = jax.tree.map(lambda x: x[:bs], dev[0])
        t0 = time.perf_counter()
        jax.block_until_ready(batched_efv(g, st, stats, chunk))
        row[f"compile_efv{bs}_s"] = time.perf_counter() - t0
        row[f"ef_ms_batch{bs}"] = 1e3 * median_time(lambda c=chunk: batched_efv(g, st, stats, c), repeats, inner)[0] / bs
    one = adam_step_runner(g, st, stats, dev, batch)

    t0 = time.perf_counter()
    jax.block_until_ready(one())
    row["compile_train_s"] = time.perf_counter() - t0
    row["train_steps_per_s"] = 1.0 / median_time(one, repeats, 10)[0]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", nargs="*", default=[str(ROOT / "experiments/aspirin/config.yaml"),
                                                     str(HERE / "aspirin_equivariant.yaml")])
    ap.add_argument("--model", action="append", default=[], help="extra model config (JSON)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "results" / "bench"))
    args = ap.parse_args()
    cfgs = [load_config(c) for c in args.configs]
    path = resolve_path(cfgs[0]["data"]["train"], cfgs[0]["base"]) if cfgs else \
        ROOT.parent / "shared/data/rmd17/rmd17_aspirin_train_01.npz"
    if not path.exists():
        raise SystemExit(f"aspirin data not found at {path} (needs ../shared/data/rmd17)")
    ds = read(path).subset(np.arange(256))
    rows = []
    for m in [c["model"] for c in cfgs] + [json.loads(x) for x in args.model]:
        rows.append(bench(m, ds, args.repeats, args.batch))
        print(json.dumps(rows[-1]), flush=True)
    info = {"molecule": "aspirin (21 atoms)", "repeats": args.repeats, "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "machine": platform.machine(),
            "jax": jax.__version__, "dtype": "float32", "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    md = ["# Local models on rMD17 aspirin: speed", "",
          f"{info['device']}, {info['affinity']} of {info['cpu_count']} cores, float32, median of "
          f"{args.repeats} repeats after compile; training: Adam, E+F loss, batch {args.batch}.", "",
          "| model | parameters | E+F ms/config (batch 1) | E+F ms/config (batch 32) | train steps/s | "
          "compile train step (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        m = {k: v for k, v in r["model"].items() if k != "type_map"}
        md.append(f"| `{json.dumps(m)}` | {r['n_parameters']} | {r['ef_ms_batch1']:.2f} | "
                  f"{r['ef_ms_batch32']:.2f} | {r['train_steps_per_s']:.1f} | {r['compile_train_s']:.0f} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
