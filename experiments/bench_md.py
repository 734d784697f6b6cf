"""MD speed of lrnn + jax-md: steps/s and ns/day, median of several runs after compile.

    .venv/bin/python experiments/bench_md.py [--quick] [--out experiments/results/md/bench_md.json]
    .venv/bin/python experiments/bench_md.py --longrange [--sizes 10000 30000]
        (writes experiments/results/md/bench_longrange.json; see time_longrange)

Systems:
  * demo: the 20-atom paracetamol molecule with the demo checkpoint (runs/demo/checkpoint;
    a randomly initialised model of the same architecture if it is missing), free space;
  * water box: 1000 H2O (3000 atoms) at 1 g/cm^3 in a periodic 31.04 Å cube made with ASE,
    with a *randomly initialised* DeepPot-SE of the demo architecture and type_map (H, O)
    (rcut 6 Å, embed 16-32-64, fit 128x3; descriptor statistics from the box, last layer
    scaled by 0.01 so that random forces stay gentle).  The cost per step does not depend
    on the parameter values, so this times a trained water model of that size.

NVE velocity Verlet (jax_md.simulate.nve), dt 0.5 fs, float64 integration; network in
float64 (the MD default) and float32.  Each measurement is one jitted chunk of
`steps` steps (neighbour-list updates included, energies logged every `log_every` steps);
the first chunk compiles and is not timed; the chunk function's compilation count is
recorded after the first and after the last chunk (`recompilations` must be 0).  Also
the ASE calculator path (ase VelocityVerlet + LrnnCalculator) for the demo molecule.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrnn import md  # noqa: E402


def water_box(n_side=10, density_g_cm3=1.0, seed=0):
    from ase import Atoms
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    w = molecule("H2O")
    w.positions -= w.get_center_of_mass()
    n = n_side ** 3
    mass_g = n * w.get_masses().sum() / 6.02214076e23
    L = (mass_g / density_g_cm3) ** (1 / 3) * 1e8  # Å
    rng = np.random.default_rng(seed)
    rots = Rotation.random(n, random_state=seed).as_matrix()
    g = (np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * L / n_side
    pos = (g[:, None, :] + np.einsum("mij,aj->mai", rots, w.positions)).reshape(-1, 3)
    pos += rng.normal(scale=0.01, size=pos.shape)
    return Atoms(numbers=np.tile(w.numbers, n), positions=pos, cell=np.eye(3) * L, pbc=True)


def time_md(pot, atoms, *, precision, dt_fs=0.5, steps=1000, log_every=100, repeats=5):
    pbc = bool(np.any(atoms.pbc))
    system = md.MDSystem(pot, atoms.positions, atoms.numbers, atoms.cell.array if pbc else None,
                         precision=precision)
    sim = md.Simulation(system, ensemble="nve", dt_fs=dt_fs, temperature_K=300.0, seed=0, log_every=log_every,
                        chunk_records=steps // log_every)
    sim.init()
    t0 = time.perf_counter()
    for _ in sim.run(steps):  # compile + first chunk
        pass
    first = time.perf_counter() - t0
    c1 = sim.compilations()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for chunk in sim.run(steps):
            frames = chunk
        times.append(time.perf_counter() - t0)
    c2 = sim.compilations()
    med = float(np.median(times))
    sps = steps / med
    return {"atoms": system.n, "precision_network": precision, "dt_fs": dt_fs, "steps_per_run": steps,
            "runs": repeats, "median_s": med, "run_times_s": times, "steps_per_s": sps,
            "ns_per_day": sps * dt_fs * 86400 / 1e6, "ms_per_step": 1000 / sps,
            "first_chunk_incl_compile_s": first, "compilations_after_first_chunk": c1,
            "compilations_after_all": c2, "recompilations": c2 - c1,
            "neighbour_reallocations": system.reallocations, "jaxmd_capacity": int(sim.nbrs.idx.shape[1]),
            "species_block_capacity": system.S, "final_temperature_K": frames[-1].temperature if frames else None}


def time_ase(pot, atoms, *, precision, dt_fs=0.5, steps=200, repeats=3):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from lrnn.ase_calculator import LrnnCalculator

    a = atoms.copy()
    a.calc = LrnnCalculator(pot, precision=precision)
    a.set_momenta(md.initial_momenta(a.get_masses(), 300.0, 0))
    dyn = VelocityVerlet(a, timestep=dt_fs * units.fs, logfile=None)
    dyn.run(5)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dyn.run(steps)
        times.append(time.perf_counter() - t0)
    sps = steps / float(np.median(times))
    return {"atoms": len(a), "precision_network": precision, "steps_per_s": sps,
            "ns_per_day": sps * dt_fs * 86400 / 1e6, "compilations": a.calc.compilations, "runs": repeats,
            "steps_per_run": steps}


def water_cluster(n_atoms, seed=0):
    """An open water-like cluster of about ``n_atoms`` atoms: a cube of randomly oriented
    H2O at 1 g/cm^3 (:func:`water_box` without its cell)."""
    box = water_box(max(2, round((n_atoms / 3) ** (1 / 3))), seed=seed)
    box.pbc = False
    box.cell = None
    return box


#: the latent-charge term of the long-range model in :func:`time_longrange`
LATENT_FMM = {"type": "latent_coulomb", "sigma": 0.5, "fit": [32], "method": "fmm"}
#: FMM expansion order of that model (relative RMS error of the potential ~1e-4 at p = 6,
#: experiments/results/fmm/bench.md; the network runs in float32)
FMM_ORDER = 6


def time_longrange(n_atoms, *, steps=20, log_every=5, repeats=2, precision="float32", skin=0.5):
    """ms per NVE step (jax-md, dt 0.5 fs, 300 K) on an open water-like cluster for the
    demo-architecture DeepPot-SE alone and with an FMM latent-Coulomb term (randomly
    initialised, last layer x0.01: the cost per step does not depend on the values).  The
    FMM plans travel in the integrator state; ``replans`` counts the plans rebuilt on the
    host during the timed runs (their cost, and the steps repeated after a stale plan, are
    in the timings).  Compilation is in the first, untimed run."""
    atoms = water_cluster(n_atoms)
    out = {"n_atoms": len(atoms), "method": "fmm", "precision_network": precision, "dt_fs": 0.5,
           "steps_per_run": steps, "runs": repeats, "skin_A": skin}
    for name, extra in (("local", {}), ("with_longrange", {"long_range": [LATENT_FMM], "fmm_min_atoms": 1000, "fmm_order": FMM_ORDER})):
        pot = md.untrained_potential([1, 8], extra, reference=atoms, output_scale=0.01)
        system = md.MDSystem(pot, atoms.positions, atoms.numbers, precision=precision, skin=skin)
        sim = md.Simulation(system, ensemble="nve", dt_fs=0.5, temperature_K=300.0, seed=0, log_every=log_every,
                            chunk_records=steps // log_every)
        t0 = time.perf_counter()
        sim.init()
        for _ in sim.run(steps):
            pass
        first = time.perf_counter() - t0
        r0, c1 = system.replans, sim.compilations()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in sim.run(steps):
                pass
            times.append(time.perf_counter() - t0)
        out[f"ms_per_step_{name}"] = 1000 * float(np.median(times)) / steps
        out[f"run_times_s_{name}"] = times
        out[f"first_run_incl_compile_s_{name}"] = first
        out[f"recompilations_{name}"] = sim.compilations() - c1
        if name == "with_longrange":
            out["replans"] = system.replans - r0
            out["replans_first_run"] = r0
            out["fmm_leaf_side_A"] = float(sim.plans.fmm.leaf_side)
            out["fmm_depth"] = int(sim.plans.fmm.depth)
            out["fmm_order"] = int(pot.config.fmm_order)
        print(f"{len(atoms)} atoms {name}: {out[f'ms_per_step_{name}']:.0f} ms/step "
              f"(first run incl. compile {first:.0f} s)", flush=True)
    out["ratio_longrange_to_local"] = out["ms_per_step_with_longrange"] / out["ms_per_step_local"]
    out["load_avg_end"] = os.getloadavg()
    return out


def main_longrange(args, header):
    rows = []
    for n in args.sizes:
        rows.append(time_longrange(n, steps=args.lr_steps, repeats=args.lr_repeats))
    res = dict(header, rows=rows)
    if len(rows) >= 2:
        per_atom = [r["ms_per_step_with_longrange"] / r["n_atoms"] for r in rows]
        res["time_per_atom_growth_with_longrange"] = per_atom[-1] / per_atom[0]
        per_atom = [r["ms_per_step_local"] / r["n_atoms"] for r in rows]
        res["time_per_atom_growth_local"] = per_atom[-1] / per_atom[0]
    res["bars"] = {"longrange_at_most_2x_local": all(r["ratio_longrange_to_local"] <= 2 for r in rows),
                   "time_per_atom_growth_at_most_1.5x": res.get("time_per_atom_growth_with_longrange", 0) <= 1.5}
    out = Path(args.out or ROOT / "experiments/results/md/bench_longrange.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out)
    print(json.dumps(res["bars"]), f"wrote {out}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "runs/demo/checkpoint"))
    p.add_argument("--out", default=None, help="default experiments/results/md/bench_md.json "
                   "(bench_longrange.json with --longrange)")
    p.add_argument("--box-steps", type=int, default=20)
    p.add_argument("--box-repeats", type=int, default=3)
    p.add_argument("--demo-steps", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--skip-box", action="store_true")
    p.add_argument("--longrange", action="store_true", help="local vs FMM latent Coulomb on open clusters")
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000])
    p.add_argument("--lr-steps", type=int, default=20)
    p.add_argument("--lr-repeats", type=int, default=2)
    args = p.parse_args(argv)
    from ase import Atoms

    import lrnn
    from lrnn.data import read

    results = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
               "device": str(jax.devices()[0]), "command": " ".join(["python", "experiments/bench_md.py"] + (argv or sys.argv[1:])),
               "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_avg_start": os.getloadavg()}
    if args.longrange:
        return main_longrange(args, results)
    args.out = args.out or str(ROOT / "experiments/results/md/bench_md.json")
    ds = read(ROOT / "lrnn/data/embedded/rmd17_paracetamol_test01_subset.npz")
    mol = Atoms(numbers=ds.numbers[0], positions=ds.positions[0])
    if Path(args.checkpoint).exists():
        pot = lrnn.load(args.checkpoint)
        results["demo_model"] = f"trained checkpoint {args.checkpoint}"
    else:
        pot = md.untrained_potential(sorted(set(mol.numbers)), reference=mol, output_scale=0.01)
        results["demo_model"] = "randomly initialised demo architecture (no runs/demo/checkpoint)"
    demo_steps = 100 if args.quick else args.demo_steps
    results["demo"] = []
    for prec in ("float64", "float32"):
        r = time_md(pot, mol, precision=prec, steps=demo_steps, log_every=min(100, demo_steps), repeats=5)
        results["demo"].append(r)
        print(f"demo 20 atoms {prec}: {r['steps_per_s']:.0f} steps/s, {r['ns_per_day']:.2f} ns/day "
              f"(recompilations {r['recompilations']})", flush=True)
    results["demo_ase"] = [time_ase(pot, mol, precision="float64", steps=20 if args.quick else 200)]
    print(f"demo via ASE calculator: {results['demo_ase'][0]['steps_per_s']:.0f} steps/s", flush=True)
    if not args.skip_box:
        box = water_box(4 if args.quick else 10)
        bpot = md.untrained_potential([1, 8], reference=box, output_scale=0.01)
        results["box_model"] = ("randomly initialised DeepPot-SE, demo architecture, type_map [1, 8], "
                                "last layer x0.01 (timing only)")
        results["box"] = []
        for prec in ("float64", "float32"):
            steps = 4 if args.quick else args.box_steps
            r = time_md(bpot, box, precision=prec, steps=steps, log_every=steps, repeats=args.box_repeats)
            r["cell_A"] = float(box.cell[0, 0])
            results["box"].append(r)
            print(f"water box {r['atoms']} atoms {prec}: {r['steps_per_s']:.2f} steps/s, "
                  f"{r['ns_per_day']:.4f} ns/day, {r['ms_per_step']:.0f} ms/step "
                  f"(recompilations {r['recompilations']})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
