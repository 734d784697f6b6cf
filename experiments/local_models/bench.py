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
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrnn import models
from lrnn.batch import make_inputs, make_labels
from lrnn.data import read
from lrnn.models.deeppot import compute_stats, fit_energy_shift
from lrnn.nn import count_parameters, split
from lrnn.potential import batched_efv, energy_forces_virial
from lrnn.train import load_config
from lrnn.train.data import resolve_path
from lrnn.train.trainer import loss_terms

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def median_time(fn, repeats, inner):
    jax.block_until_ready(fn())  # compile / warm up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        ts.append((time.perf_counter() - t) / inner)
    return float(np.median(ts))


def bench(model_cfg, ds, repeats, batch):
    model_cfg = dict(model_cfg, type_map=ds.elements)
    _, mcfg = models.model_config(model_cfg)
    g, st = split(models.create(model_cfg))
    inputs, _ = make_inputs(ds, mcfg)
    stats = {k: jnp.asarray(v, jnp.float32) for k, v in compute_stats(mcfg, ds.positions, ds.cell,
                                                                       inputs["layout"]).items()}
    labels = make_labels(ds, fit_energy_shift(ds.numbers, ds.energy, mcfg.type_map), mcfg.type_map)
    dev = jax.tree.map(jnp.asarray, (inputs, labels))
    row = {"model": model_cfg, "n_parameters": count_parameters(st)}
    for bs, inner in ((1, 20), (32, 3)):
        chunk = jax.tree.map(lambda x: x[:bs], dev[0])
        t0 = time.perf_counter()
        jax.block_until_ready(batched_efv(g, st, stats, chunk))
        row[f"compile_efv{bs}_s"] = time.perf_counter() - t0
        row[f"ef_ms_batch{bs}"] = 1e3 * median_time(lambda c=chunk: batched_efv(g, st, stats, c), repeats, inner) / bs
    tx = optax.adam(1e-3)

    @jax.jit
    def step(s, o, idx):
        i, lab = jax.tree.map(lambda x: x[idx], dev)

        def loss(p):
            pred = jax.vmap(lambda x: energy_forces_virial(g, p, stats, x))(i)
            le, lf, _ = loss_terms(pred, lab)
            return le + 100.0 * lf
        val, grads = jax.value_and_grad(loss)(s)
        upd, o = tx.update(grads, o, s)
        return optax.apply_updates(s, upd), o, val

    state = {"s": st, "o": tx.init(st), "k": 0}

    def one():
        idx = jnp.arange(state["k"], state["k"] + batch) % len(ds)
        state["s"], state["o"], v = step(state["s"], state["o"], idx)
        state["k"] += batch
        return v

    t0 = time.perf_counter()
    jax.block_until_ready(one())
    row["compile_train_s"] = time.perf_counter() - t0
    row["train_steps_per_s"] = 1.0 / median_time(one, repeats, 10)
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
