"""Benchmark DeepPot-SE on rMD17 aspirin (21 atoms): energy+forces time per configuration
at batch 1 and 32, and training steps per second; medians of repeated runs after compile.

Usage:  python experiments/bench_deeppot.py [--config experiments/aspirin/config.yaml] [--repeats 7]
Writes experiments/results/bench_deeppot.{md,json}.
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


def median_time(fn, repeats, inner):
    fn()  # compile / warm up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        ts.append((time.perf_counter() - t) / inner)
    return float(np.median(ts)), float(np.min(ts)), float(np.max(ts))


def setup_model(model_cfg, ds):
    """(graphdef, state, stats, inputs, labels) of a fresh float32 model on ``ds``."""
    _, mcfg = models.model_config(model_cfg)
    g, st = split(models.create(model_cfg))
    inputs, _ = make_inputs(ds, mcfg)
    stats = {k: jnp.asarray(v, jnp.float32) for k, v in compute_stats(mcfg, ds.positions, ds.cell,
                                                                       inputs.layout).items()}
    labels = make_labels(ds, fit_energy_shift(ds.numbers, ds.energy, mcfg.type_map), mcfg.type_map)
    return g, st, stats, inputs, labels


def adam_step_runner(graphdef, state, stats, dev, batch_size):
    """A zero-argument function running one jitted Adam step (E + 100 F loss) on the next
    ``batch_size`` structures of the device arrays ``dev = (inputs, labels)``; returns the loss."""
    tx = optax.adam(1e-3)

    @jax.jit
    def step(s, o, idx):
        i, lab = jax.tree.map(lambda x: x[idx], dev)

        def loss(p):
            pred = jax.vmap(lambda x: energy_forces_virial(graphdef, p, stats, x))(i)
            le, lf, _ = loss_terms(pred, lab)
            return le + 100.0 * lf
        val, grads = jax.value_and_grad(loss)(s)
        upd, o = tx.update(grads, o, s)
        return optax.apply_updates(s, upd), o, val

    carry = {"s": state, "o": tx.init(state), "k": 0}
    n = len(jax.tree.leaves(dev[1])[0])

    def one():
        idx = jnp.arange(carry["k"], carry["k"] + batch_size) % n
        carry["s"], carry["o"], v = step(carry["s"], carry["o"], idx)
        carry["k"] += batch_size
        return v

    return one


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(HERE / "aspirin" / "config.yaml"))
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    cfg = load_config(args.config)
    path = resolve_path(cfg["data"]["train"], cfg["base"])
    if not path.exists():
        raise SystemExit(f"aspirin data not found at {path} (needs ../shared/data/rmd17)")
    ds = read(path).subset(np.arange(256))
    model_cfg = dict(cfg["model"], type_map=ds.elements)
    g, st, stats, inputs, labels = setup_model(model_cfg, ds)
    dev_in = jax.tree.map(jnp.asarray, inputs)
    rows = {}
    for bs, inner in ((1, 50), (32, 5)):
        chunk = jax.tree.map(lambda x: x[:bs], dev_in)
        med, lo, hi = median_time(lambda c=chunk: batched_efv(g, st, stats, c), args.repeats, inner)
        rows[f"energy_forces_batch{bs}"] = {"batch": bs, "s_per_call": med, "ms_per_config": 1e3 * med / bs,
                                            "min_s": lo, "max_s": hi}
    tc = cfg["train"]
    dev = jax.tree.map(jnp.asarray, (inputs, labels))
    one = adam_step_runner(g, st, stats, dev, tc.batch_size)
    med, lo, hi = median_time(one, args.repeats, 50)
    rows["train_step"] = {"batch": tc.batch_size, "s_per_step": med, "steps_per_s": 1.0 / med, "min_s": lo,
                          "max_s": hi}
    info = {"molecule": "aspirin (21 atoms)", "n_parameters": count_parameters(st), "model": model_cfg,
            "repeats": args.repeats, "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "jax": jax.__version__, "dtype": "float32", "results": rows}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_deeppot.json").write_text(json.dumps(info, indent=1))
    md = ["# DeepPot-SE speed on rMD17 aspirin", "",
          f"Command: `python experiments/bench_deeppot.py`; {info['device']}, {info['cpu_count']} cores, "
          f"float32, {info['n_parameters']} parameters; median of {args.repeats} repeats after compile.", "",
          "| measurement | batch | median | unit |", "|---|---|---|---|"]
    for k in ("energy_forces_batch1", "energy_forces_batch32"):
        md.append(f"| energy + forces | {rows[k]['batch']} | {rows[k]['ms_per_config']:.3f} | ms per configuration |")
    md.append(f"| training step (Adam, E+F loss) | {tc.batch_size} | {rows['train_step']['steps_per_s']:.1f} | "
              "steps per second |")
    (out / "bench_deeppot.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
