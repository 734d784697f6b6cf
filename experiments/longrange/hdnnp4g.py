"""4G-HDNNP subsets (issue 18, benchmark c): local DeepPot-SE against every long-range column
that applies, 5 seeds per cell, the long-range column chosen on validation data only.

Data: ../shared/data/hdnnp4g, the RuNNer-format subsets of the 4G-HDNNP benchmarks (Ko et al.,
Nat. Commun. 12, 398 (2021)) shipped with n2p2's examples: `carbon_chain` (128 C10H2 / C10H3+
chains of 12-13 atoms, open; the total charge, 0 or +1, is a model input), `au2_mgo` (18 cells of
an Au2 cluster on Al-doped MgO, 110 atoms, periodic) and `water` (20 cells of 16 H2O, periodic).
These are small subsets of the paper's sets (thousands of structures), so the paper's RMSEs,
printed beside ours, are not like-for-like.

Split (fixed, the same for every column and seed, written into each record): test = the 20 % of
``lrnn.data.splits.split_indices(n, [round(0.8 n), -1], seed=0)``, the test part of
ablation.py's rows; validation = ``max(2, round(n_train / 10))`` of the other 80 % drawn with
``numpy.random.default_rng(0)``; the rest is fitted.  carbon_chain 92 / 10 / 26, au2_mgo 12 / 2 / 4,
water 14 / 2 / 4 (fit / validation / test).

Columns, fixed before this script's first run: every column of ablation.py that applies to the
set (local, grid, far_field, latent_coulomb, sog, dispersion, combination, latent_q on the open
carbon chains; local, latent_coulomb, sog, combination, latent_q on the periodic cells, where the
grid, far-field and dispersion terms are not defined), with ablation.py's settings.  ablation.py
had already reported test errors on these sets (3 seeds, another validation draw), which is why
no column was dropped or added here.

k-space sums on au2_mgo, whose cell is 2.9x longer along c than along a and b: ablation.py's
isotropic k-index limits (10 for latent Coulomb, 6 for SOG) become per cell vector,
ceil(n L_a / L_c) = (4, 4, 10) and (3, 3, 6): the same |k| reach along a and b as the isotropic
limit has along c, where it reaches least, from 5.4x (4.1x) fewer k-vectors; the dropped ones lie
beyond that reach, where the isotropic sum was already converged.

Training: DeepPot-SE (rcut 6 Å, smooth from 2 Å, embed (8, 16), 4 axis neurons, fit (32, 32)); each
cell one committee of 5 (``train.committee: 5``, member k starts from seed k, all see the same
batches), batch 2, learning rate 3e-3 -> 1e-4 in stages of 100 steps, energy weight 1 -> 10, force
weight 100 -> 1 (ablation.py's), a fixed number of steps (12000 for the carbon chains, 2000 for the
periodic cells), the final weights kept (``select: last``), validation every 200 steps for the
record only.  latent_q adds the loss on the reference Hirshfeld charges of the data (pref_q 10 e⁻²).

Choice: among the columns that apply to all three sets (latent_coulomb, sog, combination,
latent_q; combination is latent Coulomb + dispersion + far field on the open chains, latent
Coulomb + SOG on the periodic cells, as in ablation.py), the one with the smallest geometric mean
over the sets of (mean validation energy RMSE / local's) (``cells.choose``), before any test error
is read.  Errors are RMSEs in meV/atom and meV/Å, as the paper reports, with MAEs in the records.

Usage: python experiments/longrange/hdnnp4g.py run [--sets ...] [--columns ...]
       python experiments/longrange/hdnnp4g.py report
Resumable, several workers at once (cells.run_cells): one record per cell in
experiments/results/longrange/hdnnp4g/runs/; checkpoints in runs/hdnnp4g/ (git-ignored).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import column_model  # noqa: E402
from cells import choose, load_records, provenance, run_cells, stats  # noqa: E402

from lrnn.data import read_runner  # noqa: E402
from lrnn.data.splits import split_indices  # noqa: E402
from lrnn.potential import load  # noqa: E402
from lrnn.train import load_config, train  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "longrange" / "hdnnp4g"
WORK = HERE.parents[1] / "runs" / "hdnnp4g"
SHARED = HERE.parents[1].parent / "shared" / "data" / "hdnnp4g"
SETS = {"carbon_chain": ("Carbon_chain_4G_input.data", False), "au2_mgo": ("AlAuMgO_4G_input.data", True),
        "water": ("H2O_RPBE-D3_4G_input.data", True)}
# (energy RMSE meV/atom, force RMSE meV/Å) of 2G- and 4G-HDNNP on the paper's full test sets
PUBLISHED = {"carbon_chain": {"2G": (1.194, 78.00), "4G": (0.364, 5.80)},
             "au2_mgo": {"2G": (0.219, 66.00), "4G": (0.107, 5.34)}}
COLUMNS = ["local", "grid", "far_field", "latent_coulomb", "sog", "dispersion", "combination", "latent_q"]
SEEDS = 5
MODEL = {"type": "deeppot_se", "rcut": 6.0, "rcut_smth": 2.0, "embed": [8, 16], "axis_neurons": 4, "fit": [32, 32]}
TRAIN = {"seed": 0, "committee": SEEDS, "batch_size": 2, "schedule": "steps", "decay_steps": 100,
         "lr_start": 3e-3, "lr_stop": 1e-4, "pref_e_start": 1.0, "pref_e_limit": 10.0, "pref_f_start": 100.0,
         "pref_f_limit": 1.0, "progress": False, "checkpoint_every_s": 600, "select": "last",
         "val_every_steps": 200}
STEPS = {False: 12000, True: 2000}  # open (small chains) / periodic cells


def split(n):
    """(fit, validation, test) indices of a set of n structures."""
    rest, test = split_indices(n, [int(round(0.8 * n)), -1], seed=0)
    n_val = max(2, int(round(len(rest) / 10)))
    pick = np.random.default_rng(0).permutation(len(rest))
    return np.sort(rest[pick[n_val:]]), np.sort(rest[pick[:n_val]]), test


def extra(periodic):
    """ablation.py's per-row settings that column_model reads."""
    return {"grid": {"spacing": 3.0, "n_cells": 8}, "coulomb_sigma": 1.5 if periodic else 1.0,
            "periodic": periodic, "reference_charges": True}


def per_axis_k(model, cell):
    """``model`` with each periodic term's isotropic k-index limit n replaced by
    ceil(n L_a / L_max) per cell vector (same |k| reach as n along the longest vector)."""
    lengths = np.linalg.norm(np.asarray(cell, float), axis=1)
    terms = [dict(t, k_index_max=[int(np.ceil(t["k_index_max"] * L / lengths.max() - 1e-9)) for L in lengths])
             if t.get("method") == "reciprocal" else t for t in model.get("long_range", [])]
    return {**model, "long_range": terms} if terms else model


PER_AXIS_K = {"au2_mgo"}  # the strongly anisotropic cell


def applies(name, column):
    return column_model(column, extra(SETS[name][1])) is not None


def record_path(name, column):
    return RESULTS / "runs" / f"{name}__{column}.json"


def errors(pred_e, pred_f, ds, idx):
    """Per-member energy RMSE / MAE (eV/atom) and force RMSE / MAE (eV/Å) on structures idx."""
    n = ds.n_atoms[idx]
    de = (pred_e[:, idx] - ds.energy[idx]) / n
    df = (pred_f[:, idx] - ds.forces[idx])[:, ds.mask[idx]]  # (K, atoms, 3)
    return {"energy_rmse_eV_atom": np.sqrt(np.mean(de ** 2, 1)).tolist(),
            "energy_mae_eV_atom": np.mean(np.abs(de), 1).tolist(),
            "force_rmse_eV_A": np.sqrt(np.mean(df ** 2, (1, 2))).tolist(),
            "force_mae_eV_A": np.mean(np.abs(df), (1, 2)).tolist()}


def run(name, column):
    """Train one committee cell; its record (split, per-member errors, provenance)."""
    fname, periodic = SETS[name]
    ds = read_runner(SHARED / fname)
    fit, val, test = split(len(ds))
    out = WORK / name / column
    model = {**MODEL, **column_model(column, extra(periodic))}
    if name in PER_AXIS_K:
        model = per_axis_k(model, ds.cell[0])
    tr = {**TRAIN, "max_steps": STEPS[periodic], **({"pref_q": 10.0} if column == "latent_q" else {})}
    cfg = {"data": {"train": "in-memory", "report_energy_unit": "eV"},
           "model": model, "train": tr, "output": str(out)}
    t0 = time.perf_counter()
    summary = train(load_config(cfg), quiet=True, datasets={"train": ds.subset(fit), "val": ds.subset(val)})
    t_train = time.perf_counter() - t0
    e, f, _ = load(out / "checkpoint").predict_members(ds, batch_size=4)  # (K, n), (K, n, N, 3)
    e, f = np.asarray(e, float), np.asarray(f, float)
    return {"set": name, "column": column, "model": cfg["model"], "train": tr, "fit": fit.tolist(),
            "val": val.tolist(), "test": test.tolist(),
            **{f"val_{k}": v for k, v in errors(e, f, ds, val).items()},
            **{f"test_{k}": v for k, v in errors(e, f, ds, test).items()},
            "train_time_s": t_train, "compile_s": summary.get("compile_s"), "steps": summary.get("steps"),
            **provenance()}


def cmd_run(a):
    if not SHARED.exists():
        raise SystemExit(f"4G-HDNNP data not found at {SHARED}")
    cells = [(s, c) for s in a.sets for c in a.columns if applies(s, c)]
    run_cells(cells, record_path, run,
              lambda r: f"val E RMSE {1e3 * np.mean(r['val_energy_rmse_eV_atom']):.3f} meV/atom")


def cmd_report(a):
    recs = load_records(RESULTS / "runs", ("set", "column"))
    sets = [s for s in SETS if (s, "local") in recs]
    common = [c for c in COLUMNS if all(applies(s, c) for s in SETS)]
    chosen, scores = choose({k: r["val_energy_rmse_eV_atom"] for k, r in recs.items()}, list(SETS), common)
    md = ["# 4G-HDNNP subsets: local only vs every long-range column, 5 seeds", "",
          "Written by `python experiments/longrange/hdnnp4g.py report` from the records in `runs/` (settings and "
          "split in the script's docstring; the indices in each record).  Test RMSE, energy in meV/atom / forces "
          "in meV/Å, mean ± sample std over the 5 members (seeds) of each cell; every member evaluated on its "
          "own.  The published 2G/4G-HDNNP figures are on the paper's full test sets, not these subsets.", ""]
    if chosen is None:
        md += ["Not every common column has run on every set yet: no choice.", ""]
    else:
        md += [f"Chosen on validation: **{chosen}** (geometric mean over the three sets of validation energy RMSE "
               "relative to local: " + ", ".join(f"{c} {v:.3f}" for c, v in sorted(scores.items(), key=lambda x: x[1]))
               + ").", ""]
    md += ["| set | fit / val / test | " + " | ".join(COLUMNS) + " | published 2G / 4G |",
           "|---" * (len(COLUMNS) + 3) + "|"]
    summary = {"chosen": chosen, "validation_scores": scores, "sets": {}}
    for s in sets:
        r0 = recs[(s, "local")]
        cells = []
        for c in COLUMNS:
            r = recs.get((s, c))
            if r is None:
                cells.append("n/a" if not applies(s, c) else "–")
                continue
            (em, es), (fm, fs) = stats(r["test_energy_rmse_eV_atom"]), stats(r["test_force_rmse_eV_A"])
            cells.append(f"{em:.3g} ± {es:.2g} / {fm:.3g} ± {fs:.2g}")
            summary["sets"].setdefault(s, {})[c] = {"energy_rmse_meV_atom": [em, es], "force_rmse_meV_A": [fm, fs],
                                                    "n_members": len(r["test_energy_rmse_eV_atom"])}
        pub = PUBLISHED.get(s)
        pub = (f"{pub['2G'][0]} / {pub['4G'][0]}; {pub['2G'][1]} / {pub['4G'][1]}" if pub else "–")
        md.append(f"| {s} | {len(r0['fit'])} / {len(r0['val'])} / {len(r0['test'])} | " + " | ".join(cells)
                  + f" | {pub} |")
    if chosen is not None:
        md += ["", f"Local only against the chosen **{chosen}**, test energy RMSE (meV/atom):", "",
               f"| set | local | {chosen} | local / {chosen} |", "|---|---|---|---|"]
        for s in sets:
            if (s, chosen) in recs:
                lm, ls = stats(recs[(s, "local")]["test_energy_rmse_eV_atom"])
                cm, cs = stats(recs[(s, chosen)]["test_energy_rmse_eV_atom"])
                md.append(f"| {s} | {lm:.3g} ± {ls:.2g} | {cm:.3g} ± {cs:.2g} | {lm / cm:.2f}x |")
    times = [r["train_time_s"] for r in recs.values()]
    md += ["", f"{len(times)} cells, {sum(times) / 60:.0f} min of training in all "
           f"({min(times, default=0):.0f}-{max(times, default=0):.0f} s per committee of 5, compilation included).",
           ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.md").write_text("\n".join(md))
    (RESULTS / "results.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    r.add_argument("--columns", nargs="+", default=COLUMNS, choices=COLUMNS)
    sub.add_parser("report")
    a = ap.parse_args()
    {"run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
