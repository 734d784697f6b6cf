"""Ablation of the long-range terms: every dataset x every term, 3 seeds.

Rows: the six LODE dimers (charged C, polar P, apolar A pairs; local cutoff 4.5 Å), random
point charges (train N <= 64, test N = 512), the 4G-HDNNP subsets (C10H2/C10H3+ chains;
Au2 on MgO and water, periodic).  Columns: local DeepPot-SE only, the thesis grid, the
smooth far-field descriptor, latent charges (Coulomb), SOG, neural dispersion, and one
fixed combination (latent Coulomb + dispersion + far-field for open systems; latent
Coulomb + SOG for periodic ones), and, where the data carry reference atomic charges (the
4G-HDNNP sets), latent charges trained with the reference-charge loss (pref_q = 10 e⁻²).  Every run of a row shares the local model, data split,
optimiser and a fixed number of steps (not a time budget, so the numbers do not depend on
the machine's load); only the seed changes within a cell.  Terms that are defined for
open boundaries only (grid, far-field, dispersion) are marked n/a on periodic rows.

Cost: the energy+forces time of each term relative to the local model at N = 3000 and
10000 atoms from ``bench_terms.py`` on a quiet machine (the training runs here share the
cores, so their step times are not costs).

Usage:
  python experiments/longrange/ablation.py run [--rows ...] [--cols ...] [--seeds 0 1 2]
                                               [--worker I --n-workers K]
  python experiments/longrange/ablation.py table [--plots]
Runs are resumable: each writes experiments/results/longrange/ablation/runs/<row>__<col>__s<seed>.json
and is skipped when that file exists.  ``table`` writes results.md / results.json there.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE.parent / "results" / "longrange" / "ablation"
WORK = HERE.parents[1] / "runs" / "ablation"
SHARED = HERE.parents[1].parent / "shared" / "data"

LODE = ["0_CC", "9_CP", "2_CA", "29_PP", "3_PA", "6_AA"]
HDNNP = {"carbon_chain": ("Carbon_chain_4G_input.data", False), "au2_mgo": ("AlAuMgO_4G_input.data", True),
         "water": ("H2O_RPBE-D3_4G_input.data", True)}
ROWS = [f"lode_{d}" for d in LODE] + ["random_charges"] + list(HDNNP)
COLS = ["local", "grid", "far_field", "latent_coulomb", "sog", "dispersion", "combination", "latent_q"]
#: the long-range column fixed before any run (latent Coulomb + dispersion + far field on open
#: rows, latent Coulomb + SOG on periodic ones); the table's last column compares it with local
CHOICE = "combination"
COL_TITLES = {"local": "local only", "grid": "thesis grid", "far_field": "far-field descriptor",
              "latent_coulomb": "latent charges", "sog": "SOG", "dispersion": "dispersion",
              "combination": "combination", "latent_q": "latent charges + reference-charge loss"}


def row_setup(row):
    """(train, val, test datasets, base model dict, train dict, energy unit, scale, per_atom, extra)."""
    from lrnn.data import read_lode_h5, read_runner, read_sgdml
    from lrnn.data.splits import split_indices

    if row.startswith("lode_"):
        from lode_dimers import TOTAL_CHARGE

        dimer = row[5:]
        ds = read_lode_h5(SHARED / "lode_dimers" / f"dimer{dimer}_data.h5")
        ds.total_charge[:] = TOTAL_CHARGE[dimer]
        m = ds.mask[0]
        ds = ds.subset(np.arange(len(ds)))
        ds.positions, ds.numbers, ds.forces = ds.positions[:, m], ds.numbers[:, m], ds.forces[:, m]
        rng = np.random.default_rng(1000 + ["0_CC", "2_CA", "3_PA", "6_AA", "9_CP", "29_PP"].index(dimer))
        tr = np.sort(rng.choice(len(ds), 10, replace=False))  # the split of lode_dimers.py
        te = np.setdiff1d(np.arange(len(ds)), tr)
        model = {"rcut": 4.5, "rcut_smth": 2.0}
        train = {"batch_size": 3, "max_steps": 2000, "decay_steps": 100, "lr_start": 3e-3, "lr_stop": 1e-4,
                 "pref_e_start": 100.0, "pref_e_limit": 100.0, "pref_f_start": 10.0, "pref_f_limit": 1.0}
        return ds.subset(tr[1:]), ds.subset(tr[:1]), ds.subset(te), model, train, ("meV", 1e3, False), {
            "grid": {"spacing": 3.0, "n_cells": 8}, "coulomb_sigma": 0.5, "periodic": False}
    if row == "random_charges":
        data = HERE / "data"
        if not (data / "random_charges_train.npz").exists():
            from random_charges import generate

            generate()
        ds = read_sgdml(data / "random_charges_train.npz")
        perm = np.random.default_rng(0).permutation(len(ds))
        model = {"rcut": 5.0, "rcut_smth": 2.0}
        train = {"batch_size": 8, "max_steps": 4000, "decay_steps": 100, "lr_start": 3e-3, "lr_stop": 5e-5,
                 "pref_e_start": 1.0, "pref_e_limit": 10.0, "pref_f_start": 100.0, "pref_f_limit": 1.0}
        test = read_sgdml(data / "random_charges_test_N512.npz")
        return ds.subset(np.sort(perm[100:])), ds.subset(np.sort(perm[:100])), test, model, train, (
            "meV/atom", 1e3, True), {"grid": {"spacing": 4.0, "n_cells": 8}, "coulomb_sigma": 0.25,
                                     "periodic": False}
    fname, periodic = HDNNP[row]
    ds = read_runner(SHARED / "hdnnp4g" / fname)
    tr, te = split_indices(len(ds), [int(round(0.8 * len(ds))), -1], seed=0)
    v = max(1, len(tr) // 10)
    perm = np.random.default_rng(0).permutation(len(tr))
    model = {"rcut": 6.0, "rcut_smth": 2.0}
    # the carbon chains are small (12-13 atoms) and cheap: 12000 steps; the periodic cells 2000
    train = {"batch_size": 2, "max_steps": 2000 if periodic else 12000, "decay_steps": 100, "lr_start": 3e-3, "lr_stop": 1e-4,
             "pref_e_start": 1.0, "pref_e_limit": 10.0, "pref_f_start": 100.0, "pref_f_limit": 1.0}
    return ds.subset(tr[np.sort(perm[v:])]), ds.subset(tr[np.sort(perm[:v])]), ds.subset(te), model, train, (
        "meV/atom", 1e3, True), {"grid": {"spacing": 3.0, "n_cells": 8}, "coulomb_sigma": 1.0 if not periodic
                                 else 1.5, "periodic": periodic, "reference_charges": ds.charges is not None}


def column_model(col, extra):
    """Model options of a column, or None where the term does not apply to the row."""
    periodic = extra["periodic"]
    sig = extra["coulomb_sigma"]
    coul = {"type": "latent_coulomb", "sigma": sig, "fit": [16]}
    sog = {"type": "sog", "n_gaussians": 6, "s_min": 1.0, "s_max": 15.0, "fit": [16]}
    if periodic:
        coul.update(method="reciprocal", k_index_max=10)
        sog.update(method="reciprocal", k_index_max=6)
    disp = {"type": "dispersion", "r0": 3.0, "r_on": 16.0, "r_off": 20.0}
    far = {"far_field": {"r_on": 3.0, "r_off": 4.5}}
    if periodic and col in ("grid", "far_field", "dispersion"):
        return None
    if col == "latent_q":  # only where the data carry reference atomic charges (RuNNer sets)
        return {"long_range": [coul]} if extra.get("reference_charges") else None
    return {"local": {}, "grid": {"grid": extra["grid"]}, "far_field": far,
            "latent_coulomb": {"long_range": [coul]}, "sog": {"long_range": [sog]},
            "dispersion": {"long_range": [disp]},
            "combination": ({"long_range": [coul, sog]} if periodic else {"long_range": [coul, disp], **far})}[col]


def run_one(row, col, seed):
    from lrnn.potential import load
    from lrnn.train import load_config, train

    trn, val, test, base, tcfg, (eunit, escale, per_atom), extra = row_setup(row)
    opts = column_model(col, extra)
    if opts is None:
        return None
    out = WORK / row / f"{col}_s{seed}"
    cfg = {"data": {"train": "in-memory", "seed": seed, "report_energy_unit": "eV"},
           "model": {"type": "deeppot_se", "embed": [8, 16], "axis_neurons": 4, "fit": [32, 32], **base, **opts},
           "train": {"seed": seed, "schedule": "steps", "progress": False, "checkpoint_every_s": 600, **tcfg,
                     **({"pref_q": 10.0} if col == "latent_q" else {})},
           "output": str(out)}
    t0 = time.perf_counter()
    summary = train(load_config(cfg), quiet=True, datasets={"train": trn, "val": val})
    t_train = time.perf_counter() - t0
    steps = np.genfromtxt(out / "metrics.csv", delimiter=",", names=True)
    # time per step after the first validation (excludes compilation)
    ts, st = np.atleast_1d(steps["time_s"]), np.atleast_1d(steps["step"])
    step_time = float((ts[-1] - ts[0]) / max(st[-1] - st[0], 1)) if len(ts) > 1 else float("nan")
    pot = load(out / "checkpoint")
    e, f, _ = pot.predict(test, batch_size=4)
    de = e - test.energy
    if per_atom:
        de = de / test.n_atoms
    return {"row": row, "col": col, "seed": seed, "energy_mae": float(escale * np.mean(np.abs(de))),
            "energy_unit": eunit, "force_mae_meV_per_A": float(1e3 * np.mean(np.abs((f - test.forces)[test.mask]))),
            "n_train": len(trn), "n_val": len(val), "n_test": len(test), "steps": int(tcfg["max_steps"]),
            "train_time_s": t_train, "step_time_s": step_time, "model": cfg["model"],
            "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}


def cmd_run(a):
    (OUT / "runs").mkdir(parents=True, exist_ok=True)
    jobs = [(r, c, s) for s in a.seeds for r in a.rows for c in a.cols]
    for i, (row, col, seed) in enumerate(jobs):
        if i % a.n_workers != a.worker:
            continue
        path = OUT / "runs" / f"{row}__{col}__s{seed}.json"
        if path.exists():
            continue
        if row.startswith("lode_") and not (SHARED / "lode_dimers").exists() or \
                row in HDNNP and not (SHARED / "hdnnp4g").exists():
            print(f"skip {row}: ../shared/data not found", flush=True)
            continue
        t0 = time.perf_counter()
        res = run_one(row, col, seed)
        if res is None:
            why = ("no reference atomic charges in this dataset" if col == "latent_q"
                   else "open-boundary term on a periodic row")
            res = {"row": row, "col": col, "seed": seed, "not_applicable": why}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.rename(path)
        msg = res.get("not_applicable") or f"E MAE {res['energy_mae']:.3f} {res['energy_unit']}, " \
                                           f"F MAE {res['force_mae_meV_per_A']:.1f} meV/Å"
        print(f"[{time.strftime('%H:%M:%S')}] {row} {col} s{seed}: {msg} ({time.perf_counter() - t0:.0f} s)",
              flush=True)


def plot_binding_curves():
    """Binding curve of every column (seed 0 checkpoints) for each LODE row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lode_dimers import com_distance

    from lrnn.potential import load
    from lrnn.system import concatenate

    for row in [r for r in ROWS if r.startswith("lode_")]:
        cps = {c: WORK / row / f"{c}_s0" / "checkpoint" for c in COLS}
        cps = {c: p for c, p in cps.items() if p.exists()}
        if not cps:
            continue
        trn, val, test, *_ = row_setup(row)
        full = concatenate([trn, val, test])
        R = com_distance(full)
        order = np.argsort(R)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        e0 = full.energy[order][-1]
        ax.plot(R[order], full.energy[order] - e0, "ko-", lw=1.5, label="reference")
        for c, p in cps.items():
            e, _, _ = load(p).predict(full, batch_size=4)
            ax.plot(R[order], e[order] - e0, ".--", label=COL_TITLES[c])
        nt = len(trn) + len(val)
        ax.plot(R[nt:], full.energy[nt:] - e0, "rs", mfc="none", ms=9, label="test points")
        ax.set(xlabel="centre-of-mass distance (Å)", ylabel="E − E_ref(largest R) (eV)",
               title=f"{row}: binding curve (seed 0)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(OUT / f"binding_{row}.png", dpi=120)
        plt.close(fig)


def cmd_table(a):
    runs = [json.loads(p.read_text()) for p in sorted((OUT / "runs").glob("*.json"))]
    cell = {}
    for r in runs:
        cell.setdefault((r["row"], r["col"]), []).append(r)
    hdr = "| dataset | " + " | ".join(COL_TITLES[c] for c in COLS) + f" | local / {COL_TITLES[CHOICE]} (fixed before the runs) |"
    lines = ["# Ablation of the long-range terms (test MAE, mean ± std over seeds)", "",
             "Command: `python experiments/longrange/ablation.py run && python experiments/longrange/ablation.py "
             "table`.  Each cell: energy MAE / force MAE (units per row), n = number of seeds.  "
             "Same local model, split, optimiser and number of steps within a row.  Mean ± sample std (ddof 1).  "
             "No column is picked per row by its test error: the last column compares local with the "
             "combination fixed before the runs; issue 18's own benchmarks (`lode_dimers.py`, `hdnnp4g.py`) "
             "choose their column on validation data.", "",
             hdr, "|---" * (len(COLS) + 2) + "|"]
    summary = {}
    for row in ROWS:
        cells, means = [], {}
        unit = None
        for col in COLS:
            rs = [r for r in cell.get((row, col), []) if "energy_mae" in r]
            if any("not_applicable" in r for r in cell.get((row, col), [])):
                cells.append("n/a")
                continue
            if not rs:
                cells.append("–")
                continue
            unit = rs[0]["energy_unit"]
            e = np.array([r["energy_mae"] for r in rs])
            f = np.array([r["force_mae_meV_per_A"] for r in rs])
            means[col] = float(e.mean())
            sd_e, sd_f = (float(e.std(ddof=1)), float(f.std(ddof=1))) if len(rs) > 1 else (0.0, 0.0)
            summary.setdefault(row, {})[col] = {"energy_mae_mean": float(e.mean()), "energy_mae_std": sd_e,
                                                "force_mae_mean": float(f.mean()), "force_mae_std": sd_f,
                                                "energy_unit": unit, "n_seeds": len(rs),
                                                "step_time_s": float(np.mean([r["step_time_s"] for r in rs]))}
            cells.append(f"{e.mean():.3g} ± {sd_e:.2g} / {f.mean():.3g} ± {sd_f:.2g} (n={len(rs)})")
        if not means:
            continue
        gain = f"{means['local'] / means[CHOICE]:.2f}x" if "local" in means and CHOICE in means else ""
        lines.append(f"| {row} [{unit}; meV/Å] | " + " | ".join(cells) + f" | {gain} |")
    lines += ["", "## Cost relative to the local model", "",
              "Energy+forces time of the local model with each term, free water-like clusters, float32, quiet "
              "machine (`bench_terms.py`; exact sums in row tiles, FMM with a plan where marked).  The training "
              "runs above shared 2 cores with other jobs, so their step times are not used as costs.", "",
              "| N | " + " | ".join(COL_TITLES[c] for c in COLS[:6]) + " |", "|---" * 7 + "|"]
    bpath = HERE.parent / "results" / "longrange" / "bench_terms.json"
    if bpath.exists():
        by_n = json.loads(bpath.read_text()).get("by_n_atoms", {})
        for n, res in by_n.items():
            def rel(k):
                return f"{res[k]['relative_to_local']:.2f}x" if k in res else "–"
            lines.append(f"| {n} | 1.00x | – | {rel('far_field')} (FMM {rel('far_field (fmm)')}) | "
                         f"{rel('latent_coulomb')} (FMM {rel('latent_coulomb (fmm)')}) | {rel('sog')} | "
                         f"{rel('dispersion')} |")
    lines += ["", "Binding curves of the LODE rows (every column, seed 0): `binding_lode_<dimer>.png`."]
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    (OUT / "results.json").write_text(json.dumps(summary, indent=1))
    if a.plots:
        plot_binding_curves()
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["run", "table"])
    ap.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    ap.add_argument("--cols", nargs="+", default=COLS, choices=COLS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--worker", type=int, default=0)
    ap.add_argument("--n-workers", type=int, default=1)
    ap.add_argument("--plots", action="store_true", help="table: also plot the LODE binding curves (seed 0)")
    a = ap.parse_args()
    cmd_run(a) if a.what == "run" else cmd_table(a)


if __name__ == "__main__":
    main()
