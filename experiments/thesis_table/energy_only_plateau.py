"""Why energy-only training is slow (issue 19's thesis protocol): full-batch Adam on the energy
loss alone, on 64 rMD17 paracetamol structures, with and without ``fit_norm``.

The label spread is 0.27 eV (0.0137 eV/atom, MSE ≈ 2e-4 eV²/atom²).  A model that predicts the
mean sits at that MSE; the question is how fast each variant leaves it.  Run:

    python experiments/thesis_table/energy_only_plateau.py [--steps 1500] [--lr 1e-3] [--labels rmd17|md17]

Writes experiments/results/thesis_table/energy_only_plateau.json (loss every 250 steps, per variant).
"""

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrnn.data import read
from lrnn.models.deeppot import fit_input_stats
from lrnn.nn import merge
from lrnn.potential import energy_forces_virial
from lrnn.train.trainer import loss_terms
from lrnn.units import KCAL_MOL

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from bench_deeppot import setup_model  # noqa: E402  (model, statistics, inputs and labels of a dataset)

DATA = ROOT.parent / "shared" / "data" / "rmd17" / "rmd17_paracetamol_train_01.npz"
OUT = ROOT / "experiments" / "results" / "thesis_table" / "energy_only_plateau.json"
MODEL = {"type": "deeppot_se", "rcut": 6.0, "rcut_smth": 0.5, "embed": [16, 32, 64], "axis_neurons": 8,
         "fit": [160, 160, 160]}  # the thesis table's BASE_MODEL


def curve(ds, fit_norm, steps, lr):
    g, st, stats, inputs, labels = setup_model(dict(MODEL, type_map=ds.elements, fit_norm=fit_norm), ds)
    if fit_norm:
        stats.update({k: jnp.asarray(v, jnp.float32) for k, v in fit_input_stats(merge(g, st), inputs, stats).items()})
    inputs, labels = jax.tree.map(jnp.asarray, (inputs, labels))
    tx = optax.adam(lr)

    @jax.jit
    def step(p, o):
        def loss(p):
            return loss_terms(jax.vmap(lambda x: energy_forces_virial(g, p, stats, x))(inputs), labels)[0]
        val, grad = jax.value_and_grad(loss)(p)
        upd, o = tx.update(grad, o, p)
        return optax.apply_updates(p, upd), o, val

    o, out, t0 = tx.init(st), [], time.perf_counter()
    for i in range(steps + 1):
        st, o, val = step(st, o)
        if i % 250 == 0:
            out.append([i, float(val)])
            print(f"fit_norm={fit_norm} step {i}: energy MSE {float(val):.3e} eV²/atom²", flush=True)
    return {"fit_norm": fit_norm, "curve": out, "wall_s": time.perf_counter() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--labels", choices=["rmd17", "md17"], default="rmd17")
    args = ap.parse_args()
    if not DATA.exists():
        raise SystemExit(f"rMD17 paracetamol not found at {DATA}")
    d = np.load(DATA)
    ds = read(DATA).subset(np.arange(64))
    if args.labels == "md17":  # the original MD17 labels of the same geometries (kcal/mol -> eV)
        ds.energy[:] = d["old_energies"][:64] * KCAL_MOL
    var = float(np.var(ds.energy / 20.0))
    rec = {"command": shlex.join([sys.executable, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "loadavg_start": os.getloadavg(), "host": platform.node(), "cores": len(os.sched_getaffinity(0)),
           "structures": 64, "labels": args.labels, "lr": args.lr, "optimizer": "adam, full batch",
           "label_variance_per_atom_eV2": var, "model": MODEL,
           "runs": [curve(ds, fn, args.steps, args.lr) for fn in (False, True)]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, OUT)
    print(json.dumps({r["fit_norm"]: r["curve"][-1] for r in rec["runs"]}))


if __name__ == "__main__":
    main()
