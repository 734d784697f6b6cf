"""``lrnn md CHECKPOINT STRUCTURE``: molecular dynamics with a trained potential (jax-md).

Writes an extxyz trajectory, a CSV log (``time_fs,epot_eV,ekin_eV,etot_eV,temperature_K``)
and a PNG of energy and temperature versus time, flushed as it goes; Ctrl-C stops after
the current chunk with everything readable (press twice to stop at once).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lrnn import md  # md.run_md looked up at call time: scripts and tests may replace it
from lrnn.checkpoint import CheckpointError
from lrnn.potential import as_potential


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrnn md", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory written by lrnn train / lrnn demo")
    p.add_argument("structure", help="initial structure, any ASE-readable file (xyz, extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default="-1", help="frame of a multi-frame structure file (default: last)")
    p.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    p.add_argument("--thermostat", choices=["langevin", "nose-hoover"], default="langevin", help="for --ensemble nvt")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="K: initial Maxwell-Boltzmann velocities and the NVT target (default 300)")
    p.add_argument("--dt", type=float, default=0.5, help="time step in fs (default 0.5)")
    p.add_argument("--steps", type=int, default=1000, help="number of MD steps (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the Langevin noise")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    p.add_argument("--tau", type=float, default=100.0, help="Nose-Hoover time constant in fs (default 100)")
    p.add_argument("--keep-velocities", action="store_true", help="use the momenta stored in the structure file")
    p.add_argument("--output", "-o", default="md", help="output directory (default ./md)")
    p.add_argument("--traj", help="trajectory path (default OUTPUT/trajectory.extxyz)")
    p.add_argument("--log", help="CSV log path (default OUTPUT/log.csv)")
    p.add_argument("--plot", help="PNG path (default OUTPUT/energy.png)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines (default 10)")
    p.add_argument("--traj-every", type=int, default=100, help="steps between trajectory frames (default 100)")
    p.add_argument("--skin", type=float, default=1.0, help="neighbour-list skin in Å (default 1.0)")
    p.add_argument("--precision", choices=["float64", "float32"], default="float64",
                   help="precision of the network evaluation; integration is always float64")
    p.add_argument("--total-charge", type=float, default=None,
                   help="net charge in e (default: the structure's charge=, else neutral; models with "
                        "latent charges need it for an odd number of electrons)")
    p.add_argument("--committee", action="store_true",
                   help="require a committee checkpoint (train.committee: K); its model deviation (eV/Å) is "
                        "logged per frame")
    p.add_argument("--max-deviation", type=float, default=None, metavar="X",
                   help="committees: stop cleanly when the model deviation exceeds X eV/Å, keeping the last "
                        "good frame (OUTPUT/trajectory.last_good.extxyz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    out = Path(args.output)
    traj = Path(args.traj) if args.traj else out / "trajectory.extxyz"
    log_path = Path(args.log) if args.log else out / "log.csv"
    plot = Path(args.plot) if args.plot else out / "energy.png"
    try:
        if args.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {args.steps}")
        if args.log_every < 1 or args.traj_every < 1:
            raise ValueError("--log-every and --traj-every must be >= 1")
        traj_every = max(args.log_every, (args.traj_every // args.log_every) * args.log_every)
        if args.max_deviation is not None and args.max_deviation <= 0:
            raise ValueError(f"--max-deviation must be > 0 eV/Å, got {args.max_deviation}")
        model = args.checkpoint
        if args.committee or args.max_deviation is not None:
            model = as_potential(args.checkpoint)
            if model.committee < 2:
                raise ValueError(f"{args.checkpoint} is a single model, not a committee: --committee and "
                                 "--max-deviation need a checkpoint trained with train.committee: K >= 2")
        index = int(args.index) if args.index.lstrip("-").isdigit() else args.index
        atoms = md.read_structure(args.structure, index=index)
        res = md.run_md(model, atoms, ensemble=args.ensemble, thermostat=args.thermostat,
                     temperature_K=args.temperature, dt_fs=args.dt, steps=args.steps, seed=args.seed,
                     friction=args.friction, tau_fs=args.tau, log_every=args.log_every, traj_every=traj_every,
                     skin=args.skin, precision=args.precision, traj=traj, log_path=log_path, plot=plot,
                     keep_velocities=args.keep_velocities, progress=not args.no_progress,
                     total_charge=args.total_charge, max_deviation=args.max_deviation)
    except md.NonFiniteError as err:
        print(f"lrnn md: error: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, CheckpointError, RuntimeError) as err:
        print(f"lrnn md: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(res.summary, indent=1))
    print(f"trajectory {res.traj} ({res.frames} frames), log {res.log}, plot {res.plot}")
    if res.summary.get("stopped_by"):
        print(f"stopped: {res.summary['stopped_by']}; last good frame (step {res.summary['last_good_step']}) in "
              f"{res.summary['last_good_frame']}", file=sys.stderr)
        return 4
    if res.interrupted:
        print(f"interrupted at step {res.steps}; files are complete up to there", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
