"""Scaling of lrnn: energy+forces time and peak memory against system size, and training
step time against device count.

    .venv/bin/python experiments/bench_scale.py                # everything, ~20 min on 2 cores
    .venv/bin/python experiments/bench_scale.py --sizes 1000 10000 --skip-devices   # quick look

Writes ``experiments/results/scale/bench.json`` and ``bench.png`` (log-log).

**Size.**  Each (system, model, N) runs in a fresh Python process, so its peak resident
memory (``ru_maxrss``) is its own; the interpreter, JAX and the input arrays are in it
(``baseline_rss_gib`` is the process's RSS before the first evaluation).  Models are
randomly initialised (the cost does not depend on the weights) in float32:

* ``local``: DeepPot-SE of the demo architecture (rcut 6 Å, embed 16-32-64, fit 128x3);
* ``fmm``: the same plus a latent-Coulomb term (σ 0.5 Å) summed by the FMM (order 6);
* ``p3m``: the local model plus a latent-Coulomb term (σ 1 Å) summed by P3M
  (:func:`lrnn.longrange.pme.coulomb_p3m`, mesh spacing σ/2, B-splines of order 4);
* ``farfield``: the local model with the far-field descriptor (r_on 4, r_off 5 Å) by the FMM;
* ``sog_h``: the local model plus a sum-of-Gaussians term (8 Gaussians) evaluated
  hierarchically (:func:`lrnn.longrange.sog.sog_hierarchical`, O(N)).

Open systems are water-like clusters at 1 g/cm³ (:func:`bench_md.water_cluster`);
periodic ones water boxes (:func:`bench_md.water_box`).  One evaluation is
``Potential.calculate``: neighbour list and FMM plan or P3M mesh on the host, then the
compiled energy+forces+virial.  The first call compiles (``first_call_s``); the figure is the
median of ``--repeats`` further calls.  From a few thousand atoms on, the descriptor is
computed in chunks (``model.chunk_bytes``) and each chunk is recomputed in the backward
pass, which costs about one more descriptor evaluation: the price of O(N) memory, and the
reason the smallest cluster (unchunked) is the cheapest per atom.

**Devices.**  The demo model's training step on the embedded paracetamol data (batch 8)
with 1, 2 and 4 fake CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``)
sharing this machine's cores: it measures the overhead of the sharded step, not a speed-up
(fake devices add no compute).  Real GPUs are measured where a machine has them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments/results/scale"

SIZE_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/experiments")
import numpy as np
from bench_md import LATENT_FMM, FMM_ORDER, water_box, water_cluster
LATENT_P3M = {"type": "latent_coulomb", "sigma": 1.0, "fit": [32], "method": "p3m"}
SOG_H = {"type": "sog", "n_gaussians": 8, "fit": [16], "method": "hierarchical"}
from lrnn import md, memory
from lrnn.potential import batched_efv
n, model, periodic, repeats = int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
if periodic:
    atoms = water_box(max(2, round((n / 3) ** (1 / 3))))
else:
    atoms = water_cluster(n)
extra = {"local": {}, "fmm": {"long_range": [LATENT_FMM]}, "p3m": {"long_range": [LATENT_P3M]},
         "sog_h": {"long_range": [SOG_H]}, "farfield": {"far_field": {"r_on": 4.0, "r_off": 5.0, "method": "fmm"}}}[model]
if extra:
    extra.update(fmm_min_atoms=1000, fmm_order=FMM_ORDER)
pot = md.untrained_potential([1, 8], extra, reference=atoms, output_scale=0.01)
cell = atoms.cell.array if periodic else None
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
base = rss()
t0 = time.perf_counter()
pot.calculate(atoms.positions, atoms.numbers, cell)
first = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    r = pot.calculate(atoms.positions, atoms.numbers, cell)
    times.append(time.perf_counter() - t0)
assert np.all(np.isfinite(r["forces"]))
ds = pot._dataset(atoms.positions, atoms.numbers, cell, None, None)
row = {"n_atoms": len(atoms), "model": model, "periodic": periodic, "first_call_s": first,
       "times_s": times, "seconds": float(np.median(times)),
       "us_per_atom": 1e6 * float(np.median(times)) / len(atoms), "peak_rss_gib": rss(),
       "baseline_rss_gib": base, "capacity": [list(pot.capacity.centres), pot.capacity.neighbors],
       "chunk_bytes": int(pot.config.chunk_bytes)}
if pot.fmm_plan is not None:
    row.update(fmm_depth=int(pot.fmm_plan.depth), fmm_leaf_side_A=float(pot.fmm_plan.leaf_side))
if pot.plans is not None and pot.plans.mesh is not None:
    row.update(p3m_mesh=list(pot.plans.mesh.shape))
if pot.plans is not None and pot.plans.sog is not None:
    row.update(sog_plan=True)
# whether the O(N) path was taken (a small cluster may be too small for FMM leaves of r_off: exact sums)
row["plan_used"] = {"p3m": pot.plans.mesh, "fmm": pot.fmm_plan, "farfield": pot.fmm_plan, "sog_h": pot.plans.sog,
                    "local": None}[model] is not None
print("ROW" + json.dumps(row))
"""

DEVICE_CHILD = r"""
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
import yaml
from lrnn.train import load_config, train
cfg = yaml.safe_load(open(sys.argv[1] + "/lrnn/configs/demo.yaml"))
rows = []
for n in (1, 2, 4):
    cfg["output"] = tempfile.mkdtemp()
    cfg["data"].update(n_train=200, n_val=16)
    cfg["train"].update(schedule="steps", max_steps=int(sys.argv[2]), max_time_s=0, devices=n,
                        checkpoint_every_s=1e9, progress=False)
    s = train(load_config(cfg), quiet=True)
    rows.append({"devices": n, "steps": s["steps"], "train_time_s": s["train_time_s"], "compile_s": s["compile_s"],
                 "ms_per_step": 1000 * s["train_time_s"] / s["steps"], "batch_size": cfg["train"]["batch_size"]})
print("ROWS" + json.dumps(rows))
"""


def run_child(code, args, env=None, timeout=3600):
    env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return None, proc.stderr[-2000:]
    tag = "ROWS" if "ROWS" in proc.stdout else "ROW"
    return json.loads(proc.stdout.split(tag)[-1].strip().splitlines()[0]), None


def plot(rows, out_png):
    from lrnn.plots import _plt, _save

    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for (model, periodic), mk in ((("local", False), "o-"), (("fmm", False), "s-"), (("farfield", False), "D-"),
                                  (("sog_h", False), "x-"), (("local", True), "^--"), (("p3m", True), "v--")):
        rs = sorted((r for r in rows if r["model"] == model and r["periodic"] == periodic), key=lambda r: r["n_atoms"])
        if not rs:
            continue
        label = f"{model}{' (periodic)' if periodic else ' (open)'}"
        n = [r["n_atoms"] for r in rs]
        a1.loglog(n, [r["seconds"] for r in rs], mk, label=label)
        a2.loglog(n, [r["peak_rss_gib"] for r in rs], mk, label=label)
    n = np.array([1e3, 1e5])
    a1.loglog(n, n / 1e4, "k:", lw=0.8, label="∝ N")
    a1.set(xlabel="atoms", ylabel="energy+forces time (s)")
    a2.axhline(8, color="r", ls=":", lw=0.8, label="8 GiB bar")
    a2.set(xlabel="atoms", ylabel="peak RSS of the process (GiB)")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    return _save(plt, fig, (a1, a2), out_png)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000])
    p.add_argument("--periodic-sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--other-sizes", type=int, nargs="+", default=[1000, 10000, 100000],
                   help="sizes for the far-field descriptor and the hierarchical SOG term (open)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--skip-devices", action="store_true")
    p.add_argument("--models", nargs="+", default=["local", "fmm", "p3m", "farfield", "sog_h"],
                   help="restrict the size runs")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the other models (and the device rows with --skip-devices) from the "
                        "existing bench.json; every row records the command, date and load of its own run")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    import jax

    res = {"command": " ".join(["python", "experiments/bench_scale.py"] + (argv if argv is not None else sys.argv[1:])),
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_avg_start": os.getloadavg(),
           "precision": "float32", "sizes": [], "failures": []}
    run_info = {k: res[k] for k in ("command", "date_utc", "load_avg_start")}
    old_path = args.out / "bench.json"
    if args.merge and old_path.exists():
        old = json.loads(old_path.read_text())
        old_info = {k: old.get(k) for k in run_info}
        res["sizes"] = [dict({"run": old_info}, **r) for r in old["sizes"] if r["model"] not in args.models]
        if args.skip_devices and "devices" in old:
            res["devices"], res["devices_run"] = old["devices"], old.get("devices_run", old_info)
    jobs = ([(n, m, False) for m in ("local", "fmm") for n in args.sizes]
            + [(n, m, False) for m in ("farfield", "sog_h") for n in args.other_sizes]
            + [(n, m, True) for m in ("local", "p3m") for n in args.periodic_sizes])
    jobs = [j for j in jobs if j[1] in args.models]
    for n, model, periodic in jobs:
        t0 = time.perf_counter()
        row, err = run_child(SIZE_CHILD, [n, model, int(periodic), args.repeats])
        if row is None:
            res["failures"].append({"n_atoms": n, "model": model, "periodic": periodic, "error": err})
            print(f"{n} {model} periodic={periodic}: FAILED\n{err}", flush=True)
            continue
        row["process_wall_s"] = time.perf_counter() - t0
        row["run"] = dict(run_info, load_avg_row_end=os.getloadavg())
        res["sizes"].append(row)
        print(f"{row['n_atoms']:>7} atoms {model:<5} {'periodic' if periodic else 'open':<8} "
              f"{row['seconds']:8.2f} s  {row['us_per_atom']:7.1f} us/atom  peak {row['peak_rss_gib']:.2f} GiB "
              f"(first call {row['first_call_s']:.0f} s)", flush=True)
    full = {r["n_atoms"]: r for r in res["sizes"] if r["model"] == "fmm" and not r["periodic"]}
    lo = min(full, key=lambda n: abs(np.log(n / 1e4)), default=None)
    hi = min(full, key=lambda n: abs(np.log(n / 1e5)), default=None)
    if lo is not None and hi is not None and hi > lo:
        res["per_atom_ratio_1e4_1e5"] = full[hi]["us_per_atom"] / full[lo]["us_per_atom"]
        res["peak_gib_1e5"] = full[hi]["peak_rss_gib"]
        res["bars"] = {"per_atom_ratio_at_most_2": res["per_atom_ratio_1e4_1e5"] <= 2.0,
                       "peak_at_most_8_gib": res["peak_gib_1e5"] <= 8.0,
                       "sizes_used": [full[lo]["n_atoms"], full[hi]["n_atoms"]]}
    if not args.skip_devices:
        env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
        rows, err = run_child(DEVICE_CHILD, [args.train_steps], env=env)
        res["devices"] = rows if rows is not None else {"error": err}
        res["devices_run"] = run_info
        for r in rows or []:
            print(f"training, {r['devices']} fake CPU device(s): {r['ms_per_step']:.1f} ms/step", flush=True)
    res["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as fh:
        json.dump(res, fh, indent=1)
    os.replace(fh.name, args.out / "bench.json")
    if res["sizes"]:
        plot(res["sizes"], args.out / "bench.png")
    print(json.dumps(res.get("bars", {})), f"wrote {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
