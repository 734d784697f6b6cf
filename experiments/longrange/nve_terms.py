"""Long NVE runs for the long-range terms other than latent Coulomb: for each term a model
is trained briefly on the random-charges data (random ionic configurations, so the model
is sane for MD) and run with `lrnn md` (float64 integration, 0.25 fs) on a new 64-ion
system.  The latent-Coulomb run is experiments/longrange/nve_random_charges.py.

Usage: python experiments/longrange/nve_terms.py [--terms sog dispersion far_field]
                                                 [--train-time 240] [--ps 1]
Writes experiments/results/longrange/nve_terms.{md,json} and nve_<term>.{csv,png}.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "longrange"
EXTRA = {"sog": {"long_range": [{"type": "sog", "n_gaussians": 6, "s_min": 1.0, "s_max": 12.0, "fit": [16]}]},
         "dispersion": {"long_range": [{"type": "dispersion", "r0": 3.0, "r_on": 12.0, "r_off": 15.0}]},
         "far_field": {"far_field": {"r_on": 4.0, "r_off": 5.0}}}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--terms", nargs="+", default=list(EXTRA))
    ap.add_argument("--train-time", type=float, default=240.0)
    ap.add_argument("--ps", type=float, default=1.0)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import random_charges as rc
    from ase import Atoms
    from ase.io import write

    from lrnn.md import energy_drift
    from lrnn.md_cli import main as md_main
    from lrnn.train import load_config, train

    if not (rc.DATA / "random_charges_train.npz").exists():
        rc.generate()
    struct = OUT / "nve_random_charges_start.xyz"
    if not struct.exists():
        write(struct, Atoms(["Na"] * 32 + ["Cl"] * 32, positions=rc.place(64, np.random.default_rng(2024))))
    path = OUT / "nve_terms.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    steps = int(round(a.ps * 1000 / 0.25))
    for term in a.terms:
        cfg = rc.run_config(f"nve_{term}", False, a.train_time)
        cfg["model"].update(EXTRA[term])
        cfg["train"]["progress"] = False
        train(load_config(cfg))
        log = OUT / f"nve_{term}.csv"
        code = md_main([str(Path(cfg["output"]) / "checkpoint"), str(struct), "--ensemble", "nve", "--dt", "0.25",
                        "--steps", str(steps), "--temperature", "300", "--seed", "0", "--log", str(log),
                        "--plot", str(OUT / f"nve_{term}.png"), "--traj", str(Path(cfg["output"]) / "nve.extxyz"),
                        "--log-every", "10", "--no-progress"])
        rows = list(csv.DictReader(open(log)))
        res[term] = dict(energy_drift([float(r["time_fs"]) for r in rows], [float(r["etot_eV"]) for r in rows], 64),
                         exit_code=code, steps=steps, dt_fs=0.25, max_temperature_K=max(float(r["temperature_K"])
                                                                                        for r in rows))
        path.write_text(json.dumps(res, indent=1))
        print(term, res[term], flush=True)
    md = ["# Long NVE runs per long-range term (64 random ions, 0.25 fs, float64 integration)", "",
          "Command: `python experiments/longrange/nve_terms.py` (latent Coulomb: `nve_random_charges.py`)", "",
          "| term | steps | drift (meV/atom/ps) | RMS about fit (meV/atom) | max T (K) |", "|---|---|---|---|---|"]
    for term, r in res.items():
        md.append(f"| {term} | {r['steps']} | {r['drift_meV_per_atom_per_ps']:.2e} | "
                  f"{r['rms_fluctuation_meV_per_atom']:.2e} | {r['max_temperature_K']:.0f} |")
    (OUT / "nve_terms.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
