"""Long NVE run of the demo paracetamol model: energy conservation of lrnn MD (jax-md).

    .venv/bin/python experiments/md_nve.py [--checkpoint runs/demo/checkpoint] [--dt 0.25]
        [--ps 10] [--precision float64] [--out experiments/results/md]

Velocity Verlet (jax_md.simulate.nve) in float64, 0.25 fs, 10 ps, from the first
configuration of the embedded paracetamol test set with Maxwell-Boltzmann velocities at
300 K (seed 0).  Writes nve_<tag>.csv (the `lrnn md` log), nve_<tag>.png (energies,
temperature, E_tot with its linear fit), nve_<tag>.extxyz (a frame per 250 fs) and
nve_<tag>.json (drift in meV/atom/ps, RMS fluctuation in meV/atom, timings, the command).
Also checks that ASE (VelocityVerlet + LrnnCalculator) and jax-md agree step by step for
100 steps from the same initial state.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrnn  # noqa: E402
from lrnn import md  # noqa: E402
from lrnn.data import read  # noqa: E402


def ase_vs_jaxmd(pot, positions, numbers, dt_fs=0.25, steps=100, precision="float64"):
    from ase import Atoms
    from ase.md.verlet import VelocityVerlet

    from lrnn.ase_calculator import LrnnCalculator

    system = md.MDSystem(pot, positions, numbers, precision=precision)
    sim = md.Simulation(system, ensemble="nve", dt_fs=dt_fs, log_every=1, chunk_records=steps)
    p0 = md.initial_momenta(system.masses, 300.0, seed=0)
    frames = [sim.init(positions, momenta=p0)] + [f for ch in sim.run(steps) for f in ch]
    atoms = Atoms(numbers=numbers, positions=positions, masses=system.masses, momenta=p0)
    atoms.calc = LrnnCalculator(pot, precision=precision)
    dyn = VelocityVerlet(atoms, timestep=sim.dt, logfile=None)
    e = [(atoms.get_potential_energy(), atoms.get_kinetic_energy())]
    for _ in range(steps):
        dyn.run(1)
        e.append((atoms.get_potential_energy(), atoms.get_kinetic_energy()))
    e = np.array(e)
    j = np.array([(f.epot, f.ekin) for f in frames])
    return {"steps": steps, "dt_fs": dt_fs, "precision": precision,
            "max_abs_diff_epot_eV": float(np.abs(e[:, 0] - j[:, 0]).max()),
            "max_abs_diff_ekin_eV": float(np.abs(e[:, 1] - j[:, 1]).max()),
            "max_abs_diff_etot_eV": float(np.abs(e.sum(1) - j.sum(1)).max()),
            "max_abs_diff_positions_A": float(np.abs(atoms.positions - frames[-1].positions).max())}


def plot(csv, png, stats, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.genfromtxt(csv, delimiter=",", names=True)
    t = d["time_fs"] / 1000
    n = stats["atoms"]
    fig, ax = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for key, lab in (("epot_eV", "E_pot"), ("ekin_eV", "E_kin"), ("etot_eV", "E_tot")):
        ax[0].plot(t, (d[key] - d[key][0]) * 1000, lw=0.6, label=lab)
    ax[0].set_ylabel("E - E(0) (meV)")
    ax[0].legend(loc="upper right", fontsize=8)
    e = (d["etot_eV"] - d["etot_eV"][0]) * 1000 / n
    ax[1].plot(t, e, lw=0.6, color="C2", label="E_tot")
    ax[1].plot(t, stats["drift_meV_per_atom_per_ps"] * t + (e.mean() - stats["drift_meV_per_atom_per_ps"] * t.mean()),
               "k--", lw=0.8, label=f"fit: {stats['drift_meV_per_atom_per_ps']:.2e} meV/atom/ps")
    ax[1].set_ylabel("E_tot - E_tot(0) (meV/atom)")
    ax[1].legend(loc="upper right", fontsize=8)
    ax[2].plot(t, d["temperature_K"], lw=0.6, color="C3")
    ax[2].set(xlabel="time (ps)", ylabel="temperature (K)")
    for a in ax:
        a.grid(alpha=0.3)
    ax[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "runs/demo/checkpoint"))
    p.add_argument("--dt", type=float, default=0.25)
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--precision", choices=["float64", "float32"], default="float64")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "experiments/results/md"))
    p.add_argument("--tag", default=None)
    p.add_argument("--skip-ase", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"demo_{args.precision}"
    pot = lrnn.load(args.checkpoint)
    ds = read(ROOT / "lrnn/data/embedded/rmd17_paracetamol_test01_subset.npz")
    positions, numbers = ds.positions[0], ds.numbers[0]
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=positions)
    steps = int(round(args.ps * 1000 / args.dt))
    t0 = time.perf_counter()
    res = md.run_md(pot, atoms, ensemble="nve", temperature_K=args.temperature, dt_fs=args.dt, steps=steps, seed=0,
                    log_every=args.log_every, traj_every=int(round(250 / args.dt)), chunk_records=400,
                    precision=args.precision, traj=out / f"nve_{tag}.extxyz", log_path=out / f"nve_{tag}.csv",
                    plot=out / f"nve_{tag}_lrnn_md.png", progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    stats = dict(res.summary)
    d = np.genfromtxt(out / f"nve_{tag}.csv", delimiter=",", names=True)
    stats.update({"checkpoint": str(args.checkpoint), "dt_fs": args.dt, "simulated_ps": float(d["time_fs"][-1] / 1000),
                  "initial_temperature_K": args.temperature, "precision_network": args.precision,
                  "integration": "float64 velocity Verlet (jax_md.simulate.nve)", "wall_s_total": wall,
                  "ekin_std_meV_per_atom": float(np.std(d["ekin_eV"]) * 1000 / stats["atoms"]),
                  "bar_drift_meV_per_atom_per_ps": 1.0,
                  "passes_bar": abs(stats["drift_meV_per_atom_per_ps"]) < 1.0,
                  "command": "python " + " ".join([str(Path(sys.argv[0]).as_posix())] + (argv or sys.argv[1:])),
                  "equivalent_cli": f"lrnn md {args.checkpoint} STRUCTURE --ensemble nve --dt {args.dt} --steps {steps} "
                                    f"--temperature {args.temperature} --seed 0 --log-every {args.log_every} "
                                    f"--precision {args.precision}",
                  "platform": platform.platform(), "jax": jax.__version__, "device": str(jax.devices()[0])})
    if not args.skip_ase:
        stats["ase_vs_jaxmd"] = ase_vs_jaxmd(pot, positions, numbers, args.dt, 100, args.precision)
    plot(out / f"nve_{tag}.csv", out / f"nve_{tag}.png", stats,
         f"lrnn md NVE, demo paracetamol model, dt = {args.dt} fs, {stats['simulated_ps']:.1f} ps, "
         f"network {args.precision}, integration float64")
    (out / f"nve_{tag}.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
