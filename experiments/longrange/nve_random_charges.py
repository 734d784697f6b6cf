"""Long NVE run with a long-range model: the committed latent-charge model of the
random-charges benchmark on a new 64-ion system (Na+/Cl- at 0.02 Å^-3, open boundaries),
through `lrnn md` (jax-md velocity Verlet, float64 integration), 0.25 fs steps.

Usage: python experiments/longrange/nve_random_charges.py [--ps 2] [--temperature 300]
Writes experiments/results/longrange/nve_random_charges.{csv,png,json}.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "longrange"
CKPT = OUT / "random_charges" / "checkpoint"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ps", type=float, default=2.0)
    ap.add_argument("--temperature", type=float, default=300.0)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import random_charges as rc
    from ase import Atoms
    from ase.io import write

    from lrnn.md import energy_drift
    from lrnn.md_cli import main as md_main

    pos = rc.place(64, np.random.default_rng(2024))
    OUT.mkdir(parents=True, exist_ok=True)
    struct = OUT / "nve_random_charges_start.xyz"
    write(struct, Atoms(["Na"] * 32 + ["Cl"] * 32, positions=pos))
    steps = int(round(a.ps * 1000 / 0.25))
    log, plot = OUT / "nve_random_charges.csv", OUT / "nve_random_charges.png"
    rcode = md_main([str(CKPT), str(struct), "--ensemble", "nve", "--dt", "0.25", "--steps", str(steps),
                     "--temperature", str(a.temperature), "--seed", "0", "--log", str(log), "--plot", str(plot),
                     "--traj", str(OUT / "nve_random_charges.extxyz"), "--traj-every", str(max(1, steps // 20)),
                     "--log-every", "10", "--no-progress"])
    rows = list(csv.DictReader(open(log)))
    t = [float(r["time_fs"]) for r in rows]
    e = [float(r["etot_eV"]) for r in rows]
    res = dict(energy_drift(t, e, 64), exit_code=rcode, steps=steps, dt_fs=0.25, n_atoms=64,
               checkpoint=str(CKPT.relative_to(HERE.parents[1])),
               command="python experiments/longrange/nve_random_charges.py --ps %g" % a.ps)
    (OUT / "nve_random_charges.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
