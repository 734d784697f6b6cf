"""The driver behind ``lrnn md``: :func:`run_md` runs an :class:`~lrnn.md.system.MDSystem`
in a :class:`~lrnn.md.integrate.Simulation` and writes an extxyz trajectory, a CSV log
(header :data:`CSV_HEADER`) and a PNG plot, with a progress bar, all flushed chunk by chunk."""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from lrnn.md.analysis import energy_drift, plot_log
from lrnn.md.integrate import Frame, NonFiniteError, Simulation
from lrnn.md.system import MDSystem
from lrnn.md.units import enable_x64
from lrnn.potential import as_potential
from lrnn.system import resolve_total_charge

log = logging.getLogger(__name__)

CSV_HEADER = "time_fs,epot_eV,ekin_eV,etot_eV,temperature_K"
#: the extra CSV column of a committee model: the largest per-atom force deviation (eV/Å)
DEVIATION_COLUMN = "model_deviation_eV_per_A"


def read_structure(path, index=-1):
    """An ``ase.Atoms`` from any ASE-readable file (xyz, extxyz, cif, POSCAR, ...)."""
    import ase.io  # slow to import (scipy): only when a file is read

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        return ase.io.read(str(path), index=index)
    except Exception as e:  # ASE raises many types for unreadable files
        raise ValueError(f"cannot read a structure from {path}: {type(e).__name__}: {e}") from e


def _atoms_frame(numbers, cell, pbc, frame: Frame, masses):
    atoms = Atoms(numbers=numbers, positions=frame.positions, cell=cell, pbc=pbc)
    atoms.set_masses(masses)
    atoms.set_momenta(frame.momenta)
    atoms.info.update(step=frame.step, time_fs=frame.time_fs, epot_eV=frame.epot, ekin_eV=frame.ekin,
                      etot_eV=frame.etot, temperature_K=frame.temperature)
    return atoms


@dataclasses.dataclass
class MDResult:
    steps: int
    frames: int
    final: Frame
    seconds: float
    interrupted: bool
    traj: Path
    log: Path
    plot: Path
    summary: dict


def run_md(model, structure, *, ensemble="nve", thermostat="langevin", temperature_K=300.0, dt_fs=0.5,
           steps=1000, seed=0, friction=0.01, tau_fs=100.0, log_every=10, traj_every=100, chunk_records=None,
           skin=1.0, precision="float64", traj="md.extxyz", log_path="md.csv", plot="md.png",
           keep_velocities=False, progress=True, extra_energy=None, callback=None,
           last_good_path=None, total_charge=None, max_deviation: float | None = None) -> MDResult:
    """Run MD and write the trajectory (extxyz, every ``traj_every`` steps), the CSV log
    (every ``log_every`` steps, header :data:`CSV_HEADER`) and the PNG plot.  Everything is
    flushed after every chunk; a first Ctrl-C stops cleanly after the current chunk (a
    second one interrupts at once), and the files written so far stay readable.  On a
    NaN, the last good frame is written to ``last_good_path`` (default
    ``<traj>.last_good.extxyz``) and :class:`NonFiniteError` is raised.

    ``structure``: a path or an ``ase.Atoms``.  ``callback(frames)`` is called after each
    chunk (it may raise ``KeyboardInterrupt``).  ``total_charge`` (e): given, else the
    structure's ``charge`` (``atoms.info``, extxyz comment line), else ``None``
    (:func:`lrnn.system.resolve_total_charge`).

    A committee model (``train.committee``) adds the column :data:`DEVIATION_COLUMN` to the
    log: its largest per-atom force deviation at each logged frame (eV/Å, DP-GEN's model
    deviation, from :meth:`Potential.calculate`).  With ``max_deviation`` (eV/Å) the run
    stops cleanly at the first logged frame beyond it: the log ends with that frame, the last
    frame within it is written to ``last_good_path``, ``summary["stopped_by"]`` says why and
    ``interrupted`` is set."""
    import ase.io  # slow to import (scipy): only when a trajectory is written

    enable_x64()
    pot = as_potential(model)
    committee = pot.committee > 1
    if max_deviation is not None and not committee:
        raise ValueError("max_deviation needs a committee model (train.committee: K >= 2): a single model has no "
                         "model deviation")
    atoms = read_structure(structure) if not hasattr(structure, "get_positions") else structure
    pbc = np.asarray(atoms.pbc, bool)
    cell = np.asarray(atoms.cell.array, np.float64) if pbc.any() else None
    if traj_every % log_every:
        raise ValueError(f"traj_every ({traj_every}) must be a multiple of log_every ({log_every})")
    if total_charge is None:
        total_charge = atoms.info.get("charge", atoms.info.get("total_charge"))
    total_charge = resolve_total_charge(total_charge, atoms.numbers, pot.config.has_charge_terms,
                                        how="total_charge=Q (lrnn md --total-charge Q, or charge=Q in the "
                                            "structure's extxyz comment line)")
    system = MDSystem(pot, atoms.positions, atoms.numbers, cell, pbc if pbc.any() else None, skin=skin,
                      precision=precision, extra_energy=extra_energy, total_charge=total_charge)
    if chunk_records is None:
        chunk_records = 20
    sim = Simulation(system, ensemble=ensemble, thermostat=thermostat, dt_fs=dt_fs, temperature_K=temperature_K,
                     friction=friction, tau_fs=tau_fs, seed=seed, log_every=log_every, chunk_records=chunk_records)
    momenta = atoms.get_momenta() if keep_velocities and atoms.has("momenta") else None
    frame0 = sim.init(np.asarray(atoms.positions), momenta=momenta)
    traj, log_path, plot = Path(traj), Path(log_path), Path(plot)
    for p in (traj, log_path, plot):
        p.parent.mkdir(parents=True, exist_ok=True)
    last_good_path = Path(last_good_path) if last_good_path else traj.with_name(traj.stem + ".last_good.extxyz")
    numbers, a_cell, a_pbc = atoms.numbers, atoms.cell.array.copy(), atoms.pbc.copy()

    def line(f):
        out = f"{f.time_fs:.6f},{f.epot:.10f},{f.ekin:.10f},{f.etot:.10f},{f.temperature:.6f}"
        if committee:
            dev = pot.calculate(f.positions, numbers, cell, total_charge, pbc if pbc.any() else None)
            out += f",{dev['model_deviation']:.6f}"
            if max_deviation is not None and dev["model_deviation"] > max_deviation:
                stopped["by"] = (f"model deviation {dev['model_deviation']:.3f} eV/Å exceeds --max-deviation "
                                 f"{max_deviation:g} eV/Å at step {f.step}")
        return out + "\n"

    stopped = {"by": None}
    good = {"frame": frame0}

    stop = {"flag": False}
    old_handler = None

    def on_sigint(signum, frame):  # first Ctrl-C: finish the chunk; second: interrupt now
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True

    try:
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not in the main thread
        old_handler = None
    bar = None
    if progress:
        bar = tqdm(total=int(steps), unit="step", desc=f"lrnn md {ensemble}", dynamic_ncols=True)
    t0 = time.perf_counter()
    interrupted = False
    n_frames = 0
    last = frame0
    with open(log_path, "w") as flog, open(traj, "w") as ftraj:
        flog.write(CSV_HEADER + ("," + DEVIATION_COLUMN if committee else "") + "\n")
        flog.write(line(frame0))
        if stopped["by"]:
            raise ValueError(f"the initial structure is already outside the committee's trust: {stopped['by']}")
        ase.io.write(ftraj, _atoms_frame(numbers, a_cell, a_pbc, frame0, system.masses), format="extxyz")
        n_frames += 1
        flog.flush()
        ftraj.flush()
        try:
            for frames in sim.run(steps):
                kept = []
                for f in frames:
                    flog.write(line(f))
                    kept.append(f)
                    if stopped["by"]:
                        break
                    good["frame"] = f
                frames = kept
                for f in frames:
                    if f.step % traj_every == 0:
                        ase.io.write(ftraj, _atoms_frame(numbers, a_cell, a_pbc, f, system.masses), format="extxyz")
                        n_frames += 1
                flog.flush()
                ftraj.flush()
                if frames:
                    last = frames[-1]
                if bar is not None and frames:
                    bar.update(min(frames[-1].step, int(steps)) - bar.n)
                    bar.set_postfix_str(f"T={last.temperature:.0f} K, E_tot={last.etot:.5f} eV")
                if callback is not None:
                    callback(frames)
                if stop["flag"] or stopped["by"]:
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        except NonFiniteError as err:
            if err.frame is not None:
                ase.io.write(str(last_good_path), _atoms_frame(numbers, a_cell, a_pbc, err.frame, system.masses),
                             format="extxyz")
            err.args = (f"{err.args[0]} Last good frame written to {last_good_path}.",)
            raise
        else:
            if stopped["by"]:
                ase.io.write(str(last_good_path), _atoms_frame(numbers, a_cell, a_pbc, good["frame"], system.masses),
                             format="extxyz")
                log.warning("lrnn md stopped: %s; last good frame (step %d) written to %s", stopped["by"],
                            good["frame"].step, last_good_path)
        finally:
            flog.flush()
            ftraj.flush()
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            try:
                plot_log(log_path, plot, title=f"lrnn md {ensemble}, dt = {dt_fs:g} fs, {system.n} atoms")
            except Exception as e:  # never lose the run for a plot
                log.warning("could not write the plot %s: %s", plot, e)
    seconds = time.perf_counter() - t0
    data = np.atleast_1d(np.genfromtxt(log_path, delimiter=",", names=True))
    summary = {"atoms": system.n, "steps": int(last.step), "time_fs": float(last.time_fs), "seconds": seconds,
               "steps_per_s": last.step / seconds if seconds > 0 else float("nan"),
               "neighbour_reallocations": system.reallocations, "compilations": sim.compilations(),
               "mean_temperature_K": float(np.mean(data["temperature_K"]))}
    if committee:
        summary["max_model_deviation_eV_per_A"] = float(np.max(data[DEVIATION_COLUMN]))
    if stopped["by"]:
        summary.update(stopped_by=stopped["by"], last_good_frame=str(last_good_path),
                       last_good_step=int(good["frame"].step))
    if ensemble == "nve" and data.size > 2:
        summary.update(energy_drift(data["time_fs"], data["etot_eV"], system.n))
    return MDResult(int(last.step), n_frames, last, seconds, interrupted, traj, log_path, plot, summary)
