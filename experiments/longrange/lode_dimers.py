"""LODE molecular dimers (charged C, polar P, apolar A) at 13 separations, 6.6-15 Å
centre-of-mass distance: does a long-range term recover the interaction beyond the local
cutoff?  For each dimer, train on 10 separations (seeded choice) and test on the other 3;
local cutoff 4.5 Å (< 5 Å), so the interaction beyond contact is invisible to the local
model.  Every model's binding curve is plotted against the reference.

Total charges (the h5 files carry none) follow from the monomer compositions: C3H10N3 (Z=49,
odd: the +1 cation), C2H3O2 (Z=31: acetate, -1), CH6N (Z=19: methylammonium, +1); the
other monomers are neutral closed-shell molecules.  Open boundaries (the monomers are
rigid and 6.6-15 Å apart, far from the 30 Å box walls).

Usage: python experiments/longrange/lode_dimers.py [--dimers 0_CC 9_CP ...]
           [--models local latent_coulomb sog] [--seeds 0] [--max-time 60]
Writes experiments/results/longrange/lode/{results.md,results.json,binding_<dimer>.png}.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "longrange" / "lode"
SHARED = HERE.parents[1].parent / "shared" / "data" / "lode_dimers"
DIMERS = ["0_CC", "2_CA", "3_PA", "6_AA", "9_CP", "29_PP"]
TOTAL_CHARGE = {"0_CC": 0.0, "2_CA": 1.0, "3_PA": 0.0, "6_AA": 0.0, "9_CP": 1.0, "29_PP": 0.0}
COULOMB = {"type": "latent_coulomb", "sigma": 0.5, "fit": [16]}
DISPERSION = {"type": "dispersion", "r0": 3.0, "r_on": 16.0, "r_off": 20.0}
MODELS = {  # extra model options on top of the local DeepPot-SE
    "local": {},
    "far_field": {"far_field": {"r_on": 3.0, "r_off": 4.5}},
    "latent_coulomb": {"long_range": [COULOMB]},
    "sog": {"long_range": [{"type": "sog", "n_gaussians": 6, "s_min": 1.0, "s_max": 15.0, "fit": [16]}]},
    "dispersion": {"long_range": [DISPERSION]},
    "coulomb+dispersion": {"long_range": [COULOMB, DISPERSION]},
}


def write_split(ds, idx, path):
    np.savez(path, R=ds.positions[idx], z=ds.numbers[0], E=ds.energy[idx], F=ds.forces[idx], e_unit="eV",
             r_unit="Angstrom")


def com_distance(ds):
    from scipy.sparse.csgraph import connected_components

    z = ds.numbers[0][ds.mask[0]]
    p = ds.positions[:, : len(z)]
    _, lab = connected_components(np.linalg.norm(p[0][:, None] - p[0][None], axis=-1) < 1.8)
    return np.linalg.norm(p[:, lab == 0].mean(1) - p[:, lab == 1].mean(1), axis=-1)


def run(dimer, model, seed, max_time, workdir):
    from lrnn.data import read_lode_h5
    from lrnn.potential import load
    from lrnn.train import load_config, train

    ds = read_lode_h5(SHARED / f"dimer{dimer}_data.h5")
    ds.total_charge[:] = TOTAL_CHARGE[dimer]
    m = ds.mask[0]
    ds = ds.subset(np.arange(len(ds)))
    ds.positions, ds.numbers, ds.forces = ds.positions[:, m], ds.numbers[:, m], ds.forces[:, m]
    rng = np.random.default_rng(1000 + DIMERS.index(dimer))
    train_idx = np.sort(rng.choice(len(ds), 10, replace=False))
    test_idx = np.setdiff1d(np.arange(len(ds)), train_idx)
    workdir.mkdir(parents=True, exist_ok=True)
    write_split(ds, train_idx, workdir / "train.npz")
    cfg = {"data": {"train": str(workdir / "train.npz"), "n_train": 9, "n_val": 1, "seed": seed,
                    "report_energy_unit": "eV", "total_charge": TOTAL_CHARGE[dimer]},
           "model": {"type": "deeppot_se", "rcut": 4.5, "rcut_smth": 2.0, "embed": [8, 16], "axis_neurons": 4,
                     "fit": [32, 32], **MODELS[model]},
           "train": {"seed": seed, "batch_size": 3, "schedule": "time", "max_time_s": max_time,
                     "max_steps": 10**8, "lr_start": 3e-3, "lr_stop": 1e-4, "pref_e_start": 100.0,
                     "pref_e_limit": 100.0, "pref_f_start": 10.0, "pref_f_limit": 1.0, "progress": False,
                     "checkpoint_every_s": 600},
           "output": str(workdir / f"{model}_s{seed}")}
    t0 = time.perf_counter()
    train(load_config(cfg), quiet=True)
    t_train = time.perf_counter() - t0
    pot = load(Path(cfg["output"]) / "checkpoint")
    e, f, _ = pot.predict(ds, batch_size=13)
    return {"e_pred": e.tolist(), "e_ref": ds.energy.tolist(), "train_idx": train_idx.tolist(),
            "test_idx": test_idx.tolist(), "test_energy_mae_eV": float(np.mean(np.abs(e - ds.energy)[test_idx])),
            "train_energy_mae_eV": float(np.mean(np.abs(e - ds.energy)[train_idx])),
            "test_force_mae_eV_per_A": float(np.mean(np.abs((f - ds.forces)[test_idx]))),
            "train_time_s": t_train, "R_com": com_distance(ds).tolist()}


def plot(dimer, runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    any_run = next(iter(runs.values()))
    R, eref = np.array(any_run["R_com"]), np.array(any_run["e_ref"])
    e0 = eref[-1]
    ax.plot(R, eref - e0, "ko-", label="reference", lw=1.5)
    for name, r in runs.items():
        ax.plot(R, np.array(r["e_pred"]) - e0, ".--", label=name)
    ti = any_run["test_idx"]
    ax.plot(R[ti], eref[ti] - e0, "rs", mfc="none", ms=9, label="test points")
    ax.set(xlabel="centre-of-mass distance (Å)", ylabel="E - E_ref(largest R) (eV)", title=f"LODE dimer {dimer}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dimers", nargs="+", default=DIMERS)
    ap.add_argument("--models", nargs="+", default=["local", "latent_coulomb", "sog"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--max-time", type=float, default=60.0)
    a = ap.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"LODE data not found at {SHARED}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    res_path = RESULTS / "results.json"
    allres = json.loads(res_path.read_text()) if res_path.exists() else {}
    work = HERE.parents[1] / "runs" / "lode"
    for dimer in a.dimers:
        for model in a.models:
            for seed in a.seeds:
                r = run(dimer, model, seed, a.max_time, work / dimer)
                allres.setdefault(dimer, {}).setdefault(model, {})[str(seed)] = r
                res_path.write_text(json.dumps(allres, indent=1))
                print(dimer, model, seed, f"test E MAE {r['test_energy_mae_eV']:.4f} eV", flush=True)
        plot(dimer, {m: allres[dimer][m][str(a.seeds[0])] for m in allres[dimer]}, RESULTS / f"binding_{dimer}.png")
    names = [m for m in MODELS if any(m in allres[d] for d in allres)]  # every model run so far
    md = ["# LODE dimers: test energy MAE (eV) on the 3 held-out separations, local cutoff 4.5 Å", "",
          "Command: `python experiments/longrange/lode_dimers.py` (mean ± std over seeds)", "",
          "| dimer | " + " | ".join(names) + " | best gain vs local |", "|---" * (len(names) + 2) + "|"]
    for dimer in allres:
        cells, means = [], {}
        for model in names:
            vals = [v["test_energy_mae_eV"] for v in allres[dimer].get(model, {}).values()]
            if vals:
                means[model] = float(np.mean(vals))
                cells.append(f"{np.mean(vals):.4f} ± {np.std(vals):.4f} (n={len(vals)})")
            else:
                cells.append("-")
        gain = ""
        if "local" in means and len(means) > 1:
            best = min(v for k, v in means.items() if k != "local")
            gain = f"{means['local'] / max(best, 1e-12):.1f}x"
        md.append(f"| {dimer} | " + " | ".join(cells) + f" | {gain} |")
    md += ["", "Binding curves: `binding_<dimer>.png` (reference, every model, test points marked)."]
    (RESULTS / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
