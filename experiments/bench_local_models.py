"""lrnn's DeepPot-SE side by side with DeePMD-kit's se_e2_a (issue 20), on rMD17 split 01.

Both codes get the same data, model and budget:
- data: rMD17 `<molecule>` split 01 (../shared/data/rmd17, CC0), 1,000 training configurations
  of which the same 50 (lrnn's split, seed 0) validate; tested on the 1,000 test configurations;
  energies in eV, forces in eV/Å for both codes (DeePMD-kit's npy format, written here);
- model: se_e2_a, rcut 6 Å, rcut_smth 0.5 Å, embedding (16, 32, 64), 8 axis neurons, one
  fitting net (160, 160, 160) per element, an embedding net per (centre, neighbour) type pair
  (DeePMD's `type_one_side: false`), ResNet shortcuts without timestep (`resnet_dt: false`),
  tanh, float32 (DeePMD-kit's default is float64: set to float32 here, as lrnn trains);
- training: Adam, batch 8, learning rate 2e-3 decaying exponentially to 5e-5 over the budget,
  DeePMD loss prefactors p_e 0.1 → 4, p_f 1000 → 1 (lrnn's `experiments/aspirin/config.yaml`);
  DeePMD-kit decays over a step count sized from its measured speed, lrnn over wall time;
- selection: the checkpoint with the lowest validation score (lrnn's rule: p_e·MSE(E/atom,
  centred) + p_f·MSE(F) at the final prefactors) among those written up to T minutes; lrnn also
  re-fits its per-element energy shift on the training set, DeePMD-kit keeps its own bias;
- threads: both on the same cores (`taskset`), one after the other, in one invocation; DeePMD-kit
  with torch intra-op threads = cores, lrnn with XLA's default (all visible cores).

Commands (DeePMD-kit lives in its own venv, made by `install`; never by `make test`):

    python experiments/bench_local_models.py install          # .venv-deepmd: torch (CPU) + deepmd-kit + dpdata
    python experiments/bench_local_models.py speed --molecules aspirin paracetamol
    python experiments/bench_local_models.py train --molecule aspirin --minutes 60 --snapshots 20 60
    python experiments/bench_local_models.py curves --molecule aspirin --minutes 60   # older records: add curves
    python experiments/bench_local_models.py report

`speed`: energy+forces time per configuration at batch 1 and 32 (median of repeats after
warm-up) and training steps per second (a short training run of each code, its steps over its
training wall time; compilation and start-up reported apart).  `train`: one budgeted run of each
code, test errors at each snapshot time.  Everything lands in experiments/results/local_models/
(`peer.json`, `peer.md`, `peer_learning_curve.png`); each record carries its command, date,
load average and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "experiments" / "local_models"
OUT = Path(os.environ.get("LRNN_PEER_OUT", ROOT / "experiments" / "results" / "local_models"))  # smoke runs: elsewhere
RUNS = ROOT / "runs" / "local_models_peer"
RMD17 = ROOT.parent / "shared" / "data" / "rmd17"
DP_VENV = Path(os.environ.get("LRNN_DEEPMD_VENV", ROOT / ".venv-deepmd"))
DP_HELPER = HERE / "deepmd_helper.py"
KCAL = 0.0433641043  # eV per kcal/mol, lrnn.units.KCAL_MOL (not imported: lrnn starts JAX before the cores are set)
SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O"}
CURVE_POINTS = 200  # lrnn validations kept in a record's learning curve

MODEL = {"type": "deeppot_se", "rcut": 6.0, "rcut_smth": 0.5, "embed": [16, 32, 64], "axis_neurons": 8,
         "fit": [160, 160, 160]}
TRAIN = {"batch_size": 8, "lr_start": 2e-3, "lr_stop": 5e-5, "pref_e_start": 0.1, "pref_e_limit": 4.0,
         "pref_f_start": 1000.0, "pref_f_limit": 1.0}
# deepmd-kit[torch] pins torch 2.11.0, a CUDA build from PyPI (GBs); its PyTorch backend runs on
# the CPU build of torch installed first (2.13.0, on this machine's disk), so the extra is not used
PIP = [["torch==2.13.0"], ["deepmd-kit==3.2.0", "dpdata", "mpich", "e3nn"]]  # mpich, e3nn: imported by its PyTorch backend


def run_cmd(cmd, **kw):
    print("+", shlex.join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def dp_python():
    py = DP_VENV / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"DeePMD-kit venv not found at {DP_VENV}: run `python {Path(__file__).name} install` first "
                         "(or set LRNN_DEEPMD_VENV)")
    return py


def cmd_install(args):
    if not (DP_VENV / "bin" / "python").exists():
        run_cmd([sys.executable, "-m", "venv", DP_VENV])
    for group in PIP:
        run_cmd([DP_VENV / "bin" / "pip", "install", "-q", *group])
    # the wheel's C++ op library is built for torch 2.11 and refuses to load beside 2.13; only
    # compressed (tabulated) models call it, so it is set aside and deepmd runs pure PyTorch
    site = subprocess.run([DP_VENV / "bin" / "python", "-c", "import deepmd.lib, sys; sys.stdout.write(deepmd.lib.__path__[0])"],
                          capture_output=True, text=True, check=True).stdout
    op = Path(site) / "libdeepmd_op_pt.so"
    if op.exists():
        os.replace(op, op.with_name(op.name + ".torch-2.11-only"))
    out = subprocess.run([DP_VENV / "bin" / "python", DP_HELPER, "versions"], capture_output=True, text=True,
                         check=True).stdout
    print(out)


def lrnn_data_config(molecule):
    return {"train": str(RMD17 / f"rmd17_{molecule}_train_01.npz"), "test": str(RMD17 / f"rmd17_{molecule}_test_01.npz"),
            "n_train": 950, "n_val": 50, "seed": 0, "report_energy_unit": "kcal/mol"}


def write_deepmd_npy(ds, path: Path, type_map):
    """One DeePMD-kit system (deepmd/npy): type.raw, type_map.raw, nopbc, set.000/*.npy; eV, Å."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "set.000").mkdir(parents=True)
    types = np.searchsorted(type_map, ds.numbers[0])
    if not np.all(ds.numbers == ds.numbers[0]):
        raise ValueError("one DeePMD system needs one atom ordering")
    np.savetxt(tmp / "type.raw", types, fmt="%d")
    (tmp / "type_map.raw").write_text("\n".join(SYMBOL[z] for z in type_map) + "\n")
    (tmp / "nopbc").write_text("")
    m, n = len(ds), ds.positions.shape[1]
    np.save(tmp / "set.000" / "coord.npy", ds.positions.reshape(m, n * 3))
    np.save(tmp / "set.000" / "force.npy", ds.forces.reshape(m, n * 3))
    np.save(tmp / "set.000" / "energy.npy", ds.energy.reshape(m))
    np.save(tmp / "set.000" / "box.npy", np.tile(np.eye(3).reshape(1, 9) * 100.0, (m, 1)))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def prepare(molecule):
    """lrnn's train/val/test split of rMD17 split 01, written once as DeePMD-kit systems (eV, Å)."""
    from lrnn.train.data import load_data

    base = RUNS / molecule / "data"
    sets = load_data(lrnn_data_config(molecule))
    type_map = sorted(set(sets["train"].numbers[0].tolist()))
    for k in ("train", "val", "test"):
        if not (base / k / "set.000" / "energy.npy").exists():
            write_deepmd_npy(sets[k], base / k, type_map)
    return base, type_map, sets


def deepmd_input(type_map, n_steps, seed, save_freq, disp_freq, data_dir, n_val):
    """DeePMD-kit's input.json for the shared settings (module docstring)."""
    sel = [int(4 * np.ceil(c / 4)) for c in (np.loadtxt(data_dir / "train" / "type.raw")[:, None] ==
                                            np.arange(len(type_map))).sum(0)]
    decay_steps = 500
    return {
        "model": {"type_map": [SYMBOL[z] for z in type_map],
                  "descriptor": {"type": "se_e2_a", "rcut": MODEL["rcut"], "rcut_smth": MODEL["rcut_smth"],
                                 "sel": sel, "neuron": MODEL["embed"], "axis_neuron": MODEL["axis_neurons"],
                                 "type_one_side": False, "resnet_dt": False, "activation_function": "tanh",
                                 "precision": "float32", "seed": seed},
                  "fitting_net": {"neuron": MODEL["fit"], "resnet_dt": False, "activation_function": "tanh",
                                  "precision": "float32", "seed": seed}},
        "learning_rate": {"type": "exp", "start_lr": TRAIN["lr_start"], "stop_lr": TRAIN["lr_stop"],
                          "decay_steps": min(decay_steps, max(1, n_steps // 10))},
        "loss": {"type": "ener", "start_pref_e": TRAIN["pref_e_start"], "limit_pref_e": TRAIN["pref_e_limit"],
                 "start_pref_f": TRAIN["pref_f_start"], "limit_pref_f": TRAIN["pref_f_limit"],
                 "start_pref_v": 0.0, "limit_pref_v": 0.0},
        "training": {"training_data": {"systems": [str(data_dir / "train")], "batch_size": TRAIN["batch_size"]},
                     "validation_data": {"systems": [str(data_dir / "val")], "batch_size": n_val, "numb_btch": 1},
                     "numb_steps": int(n_steps), "seed": seed, "disp_file": "lcurve.out", "disp_freq": disp_freq,
                     "save_freq": save_freq, "max_ckpt_keep": 100000, "save_ckpt": "model.ckpt"},
    }


def record_base(args):
    return {"command": shlex.join([sys.executable, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "loadavg_start": os.getloadavg(), "cores": sorted(os.sched_getaffinity(0)), "host": platform.node()}


def dp_env(cores):
    n = str(len(cores))
    return dict(os.environ, OMP_NUM_THREADS=n, DP_INTRA_OP_PARALLELISM_THREADS=n, DP_INTER_OP_PARALLELISM_THREADS="1")


def dp_helper(*a, cores):
    out = subprocess.run([dp_python(), DP_HELPER, *map(str, a), "--threads", str(len(cores))], capture_output=True,
                         text=True, env=dp_env(cores))
    if out.returncode:
        raise RuntimeError(f"deepmd_helper {a[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def dp_train(run, data_dir, type_map, n_steps, save_freq, disp_freq, seed, cores, timeout_s=None):
    """`dp --pt train` in ``run``; returns {step: seconds since step 1} from its log's timestamps."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "input.json").write_text(json.dumps(deepmd_input(type_map, n_steps, seed, save_freq, disp_freq,
                                                            data_dir, 50), indent=1))
    with open(run / "train.log", "w") as log:
        subprocess.run([DP_VENV / "bin" / "dp", "--pt", "train", "input.json"], cwd=run, stdout=log,
                       stderr=subprocess.STDOUT, env=dp_env(cores), timeout=timeout_s, check=True)
    return dp_log_times(run)


def dp_log_times(run):
    """{step: seconds since step 1} from the timestamps of ``run/train.log``: its batch lines,
    and its "Saved model to model.ckpt-N.pt" lines (when checkpoint N exists: this gives the
    last checkpoint a time when its step is off the display interval)."""
    times = {}
    for line in (run / "train.log").read_text().splitlines():
        if "total wall time" in line and "Batch" in line:
            step = int(line.split("Batch")[1].split(":")[0])
        elif "Saved model to model.ckpt-" in line:
            step = int(line.split("model.ckpt-")[1].split(".pt")[0])
        else:
            continue
        stamp = line[1:line.index("]")]
        t = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + int(stamp.split(",")[1]) / 1e3
        times[step] = max(t, times.get(step, t))
    t1 = times.get(1, min(times.values()))
    return {s: t - t1 for s, t in times.items()}


def lrnn_config(molecule, out, budget_s=0.0, steps=0, snapshots=(), seed=0):
    train = {**TRAIN, "seed": seed, "checkpoint_every_s": 300, "progress": False, "snapshot_at_s": list(snapshots)}
    train.update({"schedule": "time", "max_time_s": budget_s, "max_steps": 10**8} if budget_s else
                 {"max_steps": steps})
    return {"data": lrnn_data_config(molecule), "model": dict(MODEL), "train": train, "output": str(out)}


def cmd_speed(args):
    """E+F time per configuration (batch 1, 32) and training steps/s of both codes on the same cores."""
    sys.path.insert(0, str(HERE))
    from bench import bench  # lrnn's timing loop (local_models/bench.py)

    from lrnn.train import load_config, train

    recs = load_records()
    for mol in args.molecules:
        data_dir, type_map, sets = prepare(mol)
        rec = {"kind": "speed", "molecule": mol, **record_base(args),
               "versions": dp_helper("versions", cores=args.cores_list)}
        # DeePMD-kit: a short training run (steps/s between the first and last log lines), then inference
        run = RUNS / mol / "dp_speed"
        shutil.rmtree(run, ignore_errors=True)
        t = dp_train(run, data_dir, type_map, args.steps, args.steps, args.steps // 5, 0, args.cores_list)
        steps = sorted(t)
        rec["deepmd"] = {"train_steps_per_s": (steps[-1] - steps[1]) / (t[steps[-1]] - t[steps[1]]),
                         **dp_helper("speed", run / f"model.ckpt-{args.steps}.pt", data_dir / "train",
                                     "--repeats", args.repeats, cores=args.cores_list)}
        # lrnn: the same short training run through the trainer (compilation excluded), then inference
        summ = train(load_config(lrnn_config(mol, RUNS / mol / "lrnn_speed", steps=args.steps)), quiet=True)
        row = bench(dict(MODEL), sets["train"].subset(np.arange(256)), args.repeats, TRAIN["batch_size"])
        rec["lrnn"] = {"train_steps_per_s": summ["steps"] / summ["train_time_s"], "compile_s": summ["compile_s"],
                       "ef_ms_batch1": row["ef_ms_batch1"], "ef_ms_batch32": row["ef_ms_batch32"],
                       "n_parameters": row["n_parameters"], "micro_train_steps_per_s": row["train_steps_per_s"]}
        rec["loadavg_end"] = os.getloadavg()
        print(json.dumps(rec, indent=1), flush=True)
        recs = [r for r in recs if not (r["kind"] == "speed" and r["molecule"] == mol)] + [rec]
        save_records(recs)


def score(pred_e, pred_f, ds):
    """lrnn's selection score at the final prefactors (energies per atom, centred; forces), eV²."""
    de = (pred_e - ds.energy) / ds.n_atoms
    return TRAIN["pref_e_limit"] * np.mean((de - de.mean()) ** 2) + \
        TRAIN["pref_f_limit"] * np.mean((pred_f - ds.forces)[ds.mask] ** 2)


def errors(pred_e, pred_f, ds):
    """Test MAE: energy per structure (kcal/mol) and force per component (kcal/mol/Å)."""
    return {"energy_mae_kcal_mol": float(np.mean(np.abs(pred_e - ds.energy))) / KCAL,
            "force_mae_kcal_mol_A": float(np.mean(np.abs(pred_f - ds.forces)[ds.mask])) / KCAL}


def cmd_train(args):
    """One budgeted run of each code; test errors at each snapshot time (min)."""
    from lrnn.evaluate import evaluate
    from lrnn.train import load_config, train

    mol, budget = args.molecule, args.minutes * 60
    data_dir, type_map, sets = prepare(mol)
    recs = load_records()
    speed = [r for r in recs if r["kind"] == "speed" and r["molecule"] == mol]
    if not speed:
        raise SystemExit(f"run `speed --molecules {mol}` first: DeePMD-kit's step count is sized from its speed")
    rec = {"kind": "train", "molecule": mol, "minutes": args.minutes, "snapshots_min": args.snapshots,
           "seed": args.seed, **record_base(args)}
    # DeePMD-kit: numb_steps from its measured speed, a checkpoint about every budget/60
    rate = speed[-1]["deepmd"]["train_steps_per_s"]
    n_steps = max(10, int(0.97 * rate * budget))
    save = max(1, n_steps // 60)
    run, out = run_dirs(mol, args.minutes, args.seed)
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    elapsed = dp_train(run, data_dir, type_map, n_steps, save, save, args.seed, args.cores_list,
                       timeout_s=2 * budget + 600)
    dp_wall = time.perf_counter() - t0
    ckpts = sorted(run.glob("model.ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    dp_helper("predict", data_dir / "val", run / "pred_val", *ckpts, cores=args.cores_list)
    val = {p: score(*(lambda z: (z["energy"], z["forces"]))(np.load(run / "pred_val" / f"{p.stem}.npz")), sets["val"])
           for p in ckpts}
    rec["deepmd"] = {"numb_steps": n_steps, "wall_s": dp_wall, "steps_per_s": n_steps / max(elapsed.values()),
                     "at": {}}
    for t_min in args.snapshots:
        ok = [p for p in ckpts if elapsed.get(int(p.stem.split("-")[1]), np.inf) <= t_min * 60]
        if not ok:
            continue
        best = min(ok, key=val.get)
        dp_helper("predict", data_dir / "test", run / "pred_test", best, cores=args.cores_list)
        z = np.load(run / "pred_test" / f"{best.stem}.npz")
        rec["deepmd"]["at"][f"{t_min:g}"] = {"checkpoint_step": int(best.stem.split("-")[1]),
                                             **errors(z["energy"], z["forces"], sets["test"])}
    # lrnn: schedule over the same wall-clock budget, snapshots of its best checkpoint
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summ = train(load_config(lrnn_config(mol, out, budget_s=budget, snapshots=[t * 60 for t in args.snapshots],
                                         seed=args.seed)), quiet=True)
    rec["lrnn"] = {"steps": summ["steps"], "wall_s": time.perf_counter() - t0, "compile_s": summ["compile_s"],
                   "steps_per_s": summ["steps"] / summ["train_time_s"], "at": {}}
    for t_min in args.snapshots:
        path = out / f"checkpoint_at_{t_min * 60:g}s"
        if not path.exists():
            path = out / "checkpoint" if t_min >= args.minutes else None
        if path is not None:
            res = evaluate(path, sets["test"], unit="kcal/mol")
            rec["lrnn"]["at"][f"{t_min:g}"] = {"energy_mae_kcal_mol": res["energy_mae"],
                                               "force_mae_kcal_mol_A": res["force_mae"]}
    rec["loadavg_end"] = os.getloadavg()
    add_val_curves(rec, sets["val"])
    print(json.dumps({k: v for k, v in rec.items() if k not in ("lrnn", "deepmd")}, indent=1), flush=True)
    save_records([r for r in recs if not same_run(r, mol, args.minutes, args.seed)] + [rec])


def run_dirs(mol, minutes, seed):
    """DeePMD-kit's and lrnn's run directories of one `train` invocation."""
    return RUNS / mol / f"dp_{minutes:g}min_seed{seed}", RUNS / mol / f"lrnn_{minutes:g}min_seed{seed}"


def same_run(r, mol, minutes, seed):
    return r["kind"] == "train" and r["molecule"] == mol and r["minutes"] == minutes and r["seed"] == seed


def add_val_curves(rec, val):
    """Validation error against training wall time, both codes, from the run directories of
    ``rec``: DeePMD-kit at every checkpoint (its predictions on the validation set; seconds
    since its first step), lrnn at every validation (metrics.csv; seconds since training
    started, compilation excluded).  Rows [minutes, energy MAE kcal/mol, force MAE kcal/mol/Å];
    a DeePMD-kit checkpoint its log gives no time for is left out, as ``train`` leaves it out
    of the selection at T;
    lrnn's energies here are before its end-of-run energy-shift re-fit; lrnn validates every
    epoch, so its curve keeps ``CURVE_POINTS`` validations evenly spaced, the last included."""
    sys.path.insert(0, str(HERE))
    from timed_runs import val_curve  # metrics.csv in minutes and kcal/mol(/Å)

    run, out = run_dirs(rec["molecule"], rec["minutes"], rec["seed"])
    elapsed = dp_log_times(run)
    rows = []
    for p in sorted((run / "pred_val").glob("model.ckpt-*.npz"), key=lambda p: int(p.stem.split("-")[1])):
        step = int(p.stem.split("-")[1])
        if step not in elapsed:  # a checkpoint the log gives no time for (logs from before save lines were read)
            continue
        z = np.load(p)
        e = errors(z["energy"], z["forces"], val)
        rows.append([elapsed[step] / 60, e["energy_mae_kcal_mol"], e["force_mae_kcal_mol_A"]])
    if not rows:
        raise SystemExit(f"{run}/pred_val holds no predictions: the DeePMD-kit run is missing")
    rec["deepmd"]["val_curve"] = rows
    curve = val_curve(out / "metrics.csv") if (out / "metrics.csv").exists() else []
    if not curve:
        raise SystemExit(f"{out}/metrics.csv is missing or empty: the lrnn run is missing")
    keep = np.unique(np.linspace(0, len(curve) - 1, min(len(curve), CURVE_POINTS)).round().astype(int))
    rec["lrnn"]["val_curve"] = [[round(curve[k][0], 3), *curve[k][1:]] for k in keep]


def cmd_curves(args):
    """Add the validation curves to a `train` record from its run directories (records written before
    `train` stored them)."""
    _, _, sets = prepare(args.molecule)
    recs = load_records()
    hit = [r for r in recs if same_run(r, args.molecule, args.minutes, args.seed)]
    if not hit:
        raise SystemExit(f"no train record for {args.molecule}, {args.minutes:g} min, seed {args.seed} in peer.json")
    add_val_curves(hit[0], sets["val"])
    save_records(recs)


def load_records():
    path = OUT / "peer.json"
    return json.loads(path.read_text()) if path.exists() else []


def save_records(recs):
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "peer.json.tmp"
    tmp.write_text(json.dumps(recs, indent=1))
    os.replace(tmp, OUT / "peer.json")
    report(recs)


def report(recs):
    """peer.md: speed and errors side by side, with lrnn / DeePMD-kit ratios."""
    L = ["# lrnn DeepPot-SE and DeePMD-kit se_e2_a, side by side", "",
         "Written by `python experiments/bench_local_models.py` (settings in its docstring: same data split, "
         "model sizes, float32, batch 8, loss and learning-rate schedule, cores).  Ratio = lrnn / DeePMD-kit "
         "for speeds (> 1: lrnn faster), DeePMD-kit / lrnn for errors (> 1: lrnn more accurate).", "",
         "## Speed", "",
         "| molecule | measure | lrnn | DeePMD-kit | ratio | cores | load avg (start) | date |", "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in recs if r["kind"] == "speed"):
        a, b = r["lrnn"], r["deepmd"]
        for key, name, inv in (("train_steps_per_s", "training steps/s (batch 8)", False),
                               ("ef_ms_batch1", "E+F ms/configuration, batch 1", True),
                               ("ef_ms_batch32", "E+F ms/configuration, batch 32", True)):
            ratio = b[key] / a[key] if inv else a[key] / b[key]
            L.append(f"| {r['molecule']} | {name} | {a[key]:.3g} | {b[key]:.3g} | {ratio:.2f} | "
                     f"{len(r['cores'])} | {r['loadavg_start'][0]:.2f} | {r['date']} |")
    L += ["", "## Test errors after T minutes of training (best on validation up to T)", "",
          "| molecule | seed | T (min) | lrnn E / F | DeePMD-kit E / F | ratio E / F | steps lrnn / DeePMD-kit "
          "| minutes trained lrnn / DeePMD-kit | DeePMD-kit checkpoint step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in recs if r["kind"] == "train"):
        for t, a in r["lrnn"]["at"].items():
            b = r["deepmd"]["at"].get(t)
            if b is None:
                continue
            L.append(f"| {r['molecule']} | {r['seed']} | {t} | {a['energy_mae_kcal_mol']:.3f} / "
                     f"{a['force_mae_kcal_mol_A']:.3f} | {b['energy_mae_kcal_mol']:.3f} / {b['force_mae_kcal_mol_A']:.3f}"
                     f" | {b['energy_mae_kcal_mol'] / a['energy_mae_kcal_mol']:.2f} / "
                     f"{b['force_mae_kcal_mol_A'] / a['force_mae_kcal_mol_A']:.2f} | {r['lrnn']['steps']} / "
                     f"{r['deepmd']['numb_steps']} | {trained_min(r['lrnn'], r['lrnn']['steps'])} / "
                     f"{trained_min(r['deepmd'], r['deepmd']['numb_steps'])} | {b.get('checkpoint_step', '')} |")
    L.append("\nErrors: energy MAE per structure (kcal/mol) / force MAE per component (kcal/mol/Å) on the "
             "1,000 test configurations of split 01.  Minutes trained: each code's whole run (steps / its "
             "steps per second); DeePMD-kit's step count is fixed in advance from its measured speed "
             "(`speed`), so its run can end before or after the budget (it runs at its own pace); its error at T "
             "is that of the best on validation among its checkpoints written by T.  Learning curves: `peer_learning_curve.png`.")
    L += other_models_table()
    (OUT / "peer.md").write_text("\n".join(L) + "\n")
    plot_curves(recs)


def other_models_table():
    """Markdown lines: test errors at the snapshot times of the other local models' timed runs
    (those run with ``--snapshots``), with their cores and training speed, per molecule."""
    L = []
    for mol in ("aspirin", "paracetamol"):
        rows = [(label, r) for label, r in timed_runs(mol) if r.get("at")]
        if not rows:
            continue
        L += ["", f"## The other local models, {mol} (`experiments/local_models/timed_runs.py run --snapshots`)", "",
              "| run | cores | T (min) | E / F | steps / s | load avg before / after | date |", "|---|---|---|---|---|---|---|"]
        for label, r in rows:
            speed = r["train_summary"]["steps"] / r["train_summary"]["train_time_s"]
            for t, a in sorted(r["at"].items(), key=lambda x: float(x[0])):
                L.append(f"| {label} | {','.join(map(str, r['cores']))} | {t} | {a['energy_mae']:.3f} / {a['force_mae']:.3f} | "
                         f"{speed:.1f} | {r['load_avg_before'][0]:.1f} / {r['load_avg_after'][0]:.1f} | {r['date']} |")
        L.append("\nSame split, test set and units as above; these runs had the cores named (one each, run side by "
                 "side), not the two cores of the lrnn / DeePMD-kit runs.  Per-configuration cost of each model: "
                 "`experiments/local_models/results/bench.md`.")
    return L


def trained_min(code, steps):
    return f"{steps / code['steps_per_s'] / 60:.1f}"


def timed_runs(molecule):
    """The timed runs of the other local models on rMD17 ``molecule`` split 01
    (local_models/timed_runs.py records; a record without ``molecule`` is aspirin's): [(label, record)]."""
    out = []
    for path in sorted((HERE / "results").glob("timed_*.json")):
        r = json.loads(path.read_text())
        if r.get("molecule", "aspirin") != molecule:
            continue
        n = len(r["cores"])
        out.append((f"{r['name']} ({r['model']['type']}, {n} core{'s' * (n > 1)})", r))
    return out


def plot_curves(recs):
    """peer_learning_curve.png: force MAE against training wall time.  Lines: validation error of
    lrnn and DeePMD-kit in each `train` record; filled markers: their test error at each snapshot;
    dashed lines and open markers: the timed runs of the other local models (validation curve
    where recorded; test error at the end and at snapshots; their cores in the legend)."""
    from lrnn.plots import _plt, _save

    train = [r for r in recs if r["kind"] == "train" and "val_curve" in r["lrnn"]]
    mols = sorted({r["molecule"] for r in train})
    if not mols:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, len(mols), figsize=(6 * len(mols), 4.5), squeeze=False)
    for ax, mol in zip(axes[0], mols):
        for r in (r for r in train if r["molecule"] == mol):
            for code, name, colour in (("lrnn", "lrnn DeepPot-SE", "C0"), ("deepmd", "DeePMD-kit se_e2_a", "C1")):
                c = np.array(r[code]["val_curve"])
                ax.plot(c[:, 0], c[:, 2], color=colour, lw=1, alpha=0.8,
                        label=f"{name}, validation ({len(r['cores'])} cores, seed {r['seed']})")
                at = sorted((float(t), v["force_mae_kcal_mol_A"]) for t, v in r[code]["at"].items())
                ax.plot(*zip(*at), "o", color=colour, ms=7, label=f"{name}, test at snapshots")
        for k, (label, t) in enumerate(timed_runs(mol)):
            if "val_curve" in t:
                c = np.array(t["val_curve"])
                ax.plot(c[:, 0], c[:, 2], "--", color=f"C{k + 2}", lw=1, alpha=0.8, label=f"{label}, validation")
            pts = sorted([(float(m), v["force_mae"]) for m, v in t.get("at", {}).items()] +
                         [(t["minutes"], t["test"]["force_mae"])])
            ax.plot(*zip(*pts), "s", mfc="none", color=f"C{k + 2}", ms=8, label=f"{label}, test")
        ax.set(xlabel="training wall time (min)", ylabel="force MAE (kcal/mol/Å)", yscale="log", xscale="log",
               title=f"rMD17 {mol}, split 01")
        ax.legend(fontsize=7)
    _save(plt, fig, list(axes[0]), OUT / "peer_learning_curve.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install")
    sp = sub.add_parser("speed")
    sp.add_argument("--molecules", nargs="+", default=["aspirin", "paracetamol"])
    sp.add_argument("--steps", type=int, default=500, help="length of the short training runs")
    sp.add_argument("--repeats", type=int, default=5)
    tp = sub.add_parser("train")
    cp = sub.add_parser("curves", help="add validation curves to a train record from its run directories")
    for p in (tp, cp):
        p.add_argument("--molecule", default="aspirin")
        p.add_argument("--minutes", type=float, default=60.0)
        p.add_argument("--seed", type=int, default=0)
    tp.add_argument("--snapshots", type=float, nargs="+", default=[20.0, 60.0])
    sub.add_parser("report")
    for p in (sp, tp):
        p.add_argument("--cores", default=",".join(map(str, sorted(os.sched_getaffinity(0)))),
                       help="CPU cores for both codes (taskset), e.g. 0,1")
    args = ap.parse_args()
    if hasattr(args, "cores"):
        args.cores_list = [int(c) for c in args.cores.split(",")]
        os.sched_setaffinity(0, args.cores_list)  # before JAX starts its thread pool; children inherit it
    if args.cmd == "install":
        cmd_install(args)
    elif args.cmd == "speed":
        cmd_speed(args)
    elif args.cmd == "train":
        cmd_train(args)
    elif args.cmd == "curves":
        cmd_curves(args)
    else:
        report(load_records())


if __name__ == "__main__":
    main()
