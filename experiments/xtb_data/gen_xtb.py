"""GFN2-xTB data for Ac-Ala3-NHMe and stachyose: Langevin MD, resumable and shardable.

MD22 itself is not available here, so the sets are generated with GFN2-xTB (tblite's ASE
calculator) by Langevin MD from real MD22 frames (../shared/data/md22/).  Each shard is an
independent trajectory (seed from (seed, k), start frame k mod the number of start frames);
a killed shard resumes exactly from its last written frame when the same command is rerun.

    # one shard (one core); rerun the same command to resume, or with a larger --n-frames to extend
    python experiments/xtb_data/gen_xtb.py --molecule ac_ala3_nhme --n-frames 6000 --shard 0/1
    # two shards on two cores (each makes half of --n-frames)
    python experiments/xtb_data/gen_xtb.py --molecule stachyose --n-frames 6000 --shard 0/2 &
    python experiments/xtb_data/gen_xtb.py --molecule stachyose --n-frames 6000 --shard 1/2 &
    # merge all shards into one sGDML-format npz (lrnn.data.read loads it in eV, Å)
    python experiments/xtb_data/gen_xtb.py --molecule ac_ala3_nhme --collect
    # label the 5 MD22 DFT frames with GFN2-xTB -> experiments/results/xtb_data/xtb_vs_dft.{md,json}
    python experiments/xtb_data/gen_xtb.py --label-dft-frames
    # 6 frames uninterrupted vs stopped after 3 and resumed (is the continuation bit for bit?)
    python experiments/xtb_data/gen_xtb.py --molecule ac_ala3_nhme --check-resume 6
    # recompute 5 frames of the merged set and check forces = -dE/dx by central differences
    python experiments/xtb_data/gen_xtb.py --molecule ac_ala3_nhme --check-labels 5

Output per shard: DATA/<molecule>/shard_<k>of<K>/{frames.extxyz (eV, Å, eV/Å; append-only,
fsynced per frame), state.json (restart state, replaced atomically), settings.json,
progress.json}.  ``langevin_frames`` (any ASE calculator) and ``run_shard`` are the reusable core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

from lrnn.data import arrays_sha256, read
from lrnn.units import KCAL_MOL

ROOT = Path(__file__).resolve().parents[2]
MD22 = ROOT.parent / "shared" / "data" / "md22"
DATA = ROOT / "experiments" / "xtb_data" / "data"
RESULTS = ROOT / "experiments" / "results" / "xtb_data"
START = {"ac_ala3_nhme": MD22 / "md22_Ac-Ala3-NHMe_5frames.xyz", "stachyose": MD22 / "md22_stachyose_frame0.xyz"}
KCAL = KCAL_MOL  # eV per kcal/mol, the constant lrnn.data.read_sgdml converts with
METHOD = "GFN2-xTB"


def log(msg: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_xtb():
    """A fresh tblite GFN2-xTB calculator (imported here so the core runs without tblite)."""
    from tblite.ase import TBLite

    return TBLite(method=METHOD, verbosity=0)


def _n_steps(fs: float, timestep_fs: float, what: str) -> int:
    n = round(fs / timestep_fs)
    if n < 0 or abs(n * timestep_fs - fs) > 1e-9:
        raise ValueError(f"{what} ({fs} fs) is not a multiple of the timestep ({timestep_fs} fs)")
    return n


def langevin_frames(start: Atoms, make_calc, *, temperature_K: float, timestep_fs: float, stride_fs: float,
                    friction_per_fs: float, seed, equilibrate_fs: float = 0.0, state: dict | None = None,
                    max_retries: int = 5, log=log):
    """Langevin MD (ASE, centre of mass fixed) from ``start`` with calculators from ``make_calc()``.

    Yields ``(frame, state)`` every ``stride_fs``: ``frame`` is an Atoms with a single-point
    calculator (energy eV, forces eV/Å) and ``info`` step, time_fs, T_kin_K, or None during the
    first ``equilibrate_fs``; ``state`` (JSON-serialisable: positions, momenta, step, RNG state)
    resumes the trajectory exactly when passed back in (also for calculators that remember
    their last result, such as tblite's SCF guess: the calculator is reset before every frame's
    labels, which the next stride starts from).  ``seed`` is an int or list of ints.
    A calculator error or a non-finite result is logged and the stride is redone from the last
    yielded state with a fresh calculator and a new noise stream (derived from seed and the
    failure count); more than ``max_retries`` failures in a row raise RuntimeError."""
    n_eq = _n_steps(equilibrate_fs, timestep_fs, "equilibration")
    stride = _n_steps(stride_fs, timestep_fs, "stride")
    if stride < 1:
        raise ValueError("stride must be at least one timestep")
    entropy = [int(s) for s in np.atleast_1d(seed)]
    atoms = Atoms(start.numbers, positions=start.positions)
    atoms.set_constraint(FixCom())
    if state is None:
        rng = np.random.default_rng(np.random.SeedSequence(entropy))
        thermalize_momenta(atoms, temperature_K, rng=rng)  # Maxwell-Boltzmann
        Stationary(atoms)
        ZeroRotation(atoms)
        state = {"step": 0, "failures": 0, "positions": atoms.positions.tolist(),
                 "momenta": atoms.get_momenta().tolist(), "rng": rng.bit_generator.state}
    state = dict(state)
    consecutive = 0
    while True:
        atoms.set_positions(np.asarray(state["positions"], float), apply_constraint=False)
        atoms.set_momenta(np.asarray(state["momenta"], float), apply_constraint=False)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        atoms.calc = make_calc()
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
        step = state["step"]
        try:
            while True:
                for _ in range(stride):
                    dyn.step()
                step += stride
                # a fresh calculation at every frame (tblite starts each SCF from the previous one's
                # wavefunction): labels depend on the geometry alone, and a resumed trajectory, whose
                # calculator is new, continues bit for bit (about one extra SCF per stride)
                atoms.calc.reset()
                energy = atoms.get_potential_energy()
                forces = atoms.get_forces(apply_constraint=False)
                if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
                    raise FloatingPointError(f"non-finite energy/forces at step {step}")
                state = {"step": step, "failures": state["failures"], "positions": atoms.positions.tolist(),
                         "momenta": atoms.get_momenta().tolist(), "rng": rng.bit_generator.state}
                consecutive = 0
                frame = None
                if step > n_eq:
                    frame = Atoms(atoms.numbers, positions=atoms.positions.copy())
                    frame.info.update(step=step, time_fs=step * timestep_fs, T_kin_K=atoms.get_temperature())
                    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=forces.copy())
                yield frame, state
        except Exception as err:  # noqa: BLE001 - any calculator failure is retried, then re-raised
            consecutive += 1
            failures = state["failures"] + 1
            log(f"calculator failure {failures} between steps {state['step']} and {state['step'] + stride}: "
                f"{type(err).__name__}: {err}; redoing the stride with a new noise stream")
            if consecutive > max_retries:
                raise RuntimeError(f"{consecutive} failures in a row at step {state['step']}") from err
            fresh = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(failures,)))
            state = dict(state, failures=failures, rng=fresh.bit_generator.state)


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def shard_dir(out_dir: Path, molecule: str, k: int, n_shards: int) -> Path:
    return Path(out_dir) / molecule / f"shard_{k}of{n_shards}"


def read_frames(shard: Path) -> list[Atoms]:
    """The complete frames of a shard (up to the size recorded in its state, so a running
    or killed shard can be read safely)."""
    path, st = shard / "frames.extxyz", shard / "state.json"
    if not path.exists() or not st.exists():
        return []
    n_bytes = json.loads(st.read_text())["data_bytes"]
    with open(path) as fh:
        text = fh.read(n_bytes)
    return ase.io.read(io.StringIO(text), index=":", format="extxyz") if text else []


def run_shard(out: Path, start: Atoms, make_calc, n_frames: int, settings: dict, log=log, **md) -> int:
    """Append frames to ``out/frames.extxyz`` until it holds ``n_frames``, resuming from
    ``out/state.json``.  ``md`` goes to :func:`langevin_frames`; ``settings`` is written to
    ``out/settings.json`` and must match (apart from n_frames) on resume.  Returns frames held."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, st_path, set_path = out / "frames.extxyz", out / "state.json", out / "settings.json"
    settings = dict(settings, md={k: v for k, v in md.items() if k != "max_retries"})
    if set_path.exists():
        old = json.loads(set_path.read_text())
        fixed = [k for k in settings if k not in ("n_frames", "versions")]
        diff = [k for k in fixed if old.get(k) != json.loads(json.dumps(settings[k]))]
        if diff:
            raise SystemExit(f"{out}: settings {diff} differ from the existing run; use another --out-dir")
    state = None
    if st_path.exists():
        state = json.loads(st_path.read_text())
        size = data.stat().st_size if data.exists() else 0
        if size < state["data_bytes"]:
            raise SystemExit(f"{data} is shorter ({size} B) than its state says ({state['data_bytes']} B)")
        if size > state["data_bytes"]:  # a frame written after the last saved state, or half written
            log(f"truncating {data} from {size} to {state['data_bytes']} bytes (unsaved tail)")
            with open(data, "r+b") as fh:
                fh.truncate(state["data_bytes"])
                os.fsync(fh.fileno())
    elif data.exists() and data.stat().st_size > 0:
        raise SystemExit(f"{data} exists without {st_path}; cannot resume it, move it away")
    _write_json_atomic(set_path, dict(settings, n_frames=n_frames))
    n_have = state["n_frames"] if state else 0
    if n_have >= n_frames:
        log(f"{out}: {n_have} frames already, nothing to do")
        return n_have
    log(f"{out}: {'resuming at step ' + str(state['step']) if state else 'starting'} with {n_have} frames, "
        f"target {n_frames}")
    t0, steps0 = time.perf_counter(), state["step"] if state else 0
    with open(data, "a") as fh:
        for frame, new in langevin_frames(start, make_calc, state=state, log=log, **md):
            if frame is not None:
                ase.io.write(fh, frame, format="extxyz")
                fh.flush()
                os.fsync(fh.fileno())
                n_have += 1
            new = dict(new, n_frames=n_have, data_bytes=fh.tell())
            _write_json_atomic(st_path, new)
            if frame is not None and (n_have % 50 == 0 or n_have in (1, 10) or n_have == n_frames):
                dt, dsteps = time.perf_counter() - t0, new["step"] - steps0
                rate = 60 * (new["step"] - steps0) / dt / round(md["stride_fs"] / md["timestep_fs"])
                prog = {"n_frames": n_have, "target": n_frames, "step": new["step"], "failures": new["failures"],
                        "s_per_md_step": dt / dsteps, "frames_per_min": rate,
                        "eta_min": (n_frames - n_have) / rate, "T_kin_K": frame.info["T_kin_K"],
                        "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
                _write_json_atomic(out / "progress.json", prog)
                log(f"{n_have}/{n_frames} frames, {prog['s_per_md_step']:.3f} s/step, {rate:.1f} frames/min, "
                    f"ETA {prog['eta_min']:.0f} min, T_kin {frame.info['T_kin_K']:.0f} K")
            if n_have >= n_frames:
                break
    return n_have


def collect(shards: list[Path], out_path: Path, name: str, theory: str = METHOD) -> dict:
    """Merge shards into one compressed sGDML-format npz: R (Å, float32), z, E (kcal/mol,
    float64), F (kcal/mol/Å, float32), e_unit, r_unit (read_sgdml converts to eV, Å), plus
    shard and step of every frame.  The summary holds :func:`arrays_sha256` of the set and of
    each shard's frames (so a regenerated set that differs names the shard that differs)."""
    frames, shard_of = [], []
    for i, s in enumerate(shards):
        fr = read_frames(Path(s))
        frames += fr
        shard_of += [i] * len(fr)
    if not frames:
        raise SystemExit(f"no frames in {[str(s) for s in shards]}")
    z = frames[0].numbers
    if any(len(a) != len(z) or (a.numbers != z).any() for a in frames):
        raise SystemExit("shards hold different molecules")
    e = np.array([a.get_potential_energy() for a in frames])
    f = np.stack([a.get_forces() for a in frames])
    if not (np.isfinite(e).all() and np.isfinite(f).all()):
        raise SystemExit("non-finite labels in the shards")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"R": np.stack([a.positions for a in frames]).astype(np.float32), "z": z.astype(np.int32),
              "E": e / KCAL, "F": (f / KCAL).astype(np.float32)}
    shard_of = np.array(shard_of, np.int32)
    per_shard = [arrays_sha256({k: v if k == "z" else v[shard_of == i] for k, v in arrays.items()})
                 for i in range(len(shards))]
    np.savez_compressed(out_path, **arrays,
                        e_unit="kcal/mol", r_unit="Angstrom", name=name, theory=theory, type="d",
                        shard=shard_of,
                        step=np.array([a.info["step"] for a in frames], np.int64))
    summary = {"file": str(out_path), "n_frames": len(frames), "n_atoms": len(z),
               "size_MB": out_path.stat().st_size / 1e6, "shards": [str(s) for s in shards],
               "E_std_eV": float(e.std()), "F_rms_eV_A": float(np.sqrt((f ** 2).mean())),
               "T_kin_mean_K": float(np.mean([a.info["T_kin_K"] for a in frames])),
               "arrays_sha256": arrays_sha256(arrays), "shard_arrays_sha256": per_shard}
    _write_json_atomic(out_path.with_suffix(".json"), summary)
    return summary


def record_collected(summary: dict, molecule: str, tag: str, out_dir: Path = RESULTS) -> None:
    """Write the merged set's summary and its shards' settings to ``out_dir`` (paths relative
    to the repository), the committed record of the git-ignored data."""
    def rel(p):
        p = Path(p).resolve()
        return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)

    rec = dict(summary, file=rel(summary["file"]), shards=[rel(s) for s in summary["shards"]],
               collected=time.strftime("%Y-%m-%d %H:%M:%S"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(out_dir / f"{molecule}_{tag}_summary.json", rec)
    settings = [json.loads((Path(s) / "settings.json").read_text()) for s in summary["shards"]]
    _write_json_atomic(out_dir / f"{molecule}_{tag}_settings.json", settings[0] if len(settings) == 1 else settings)


def _fstats(f_x, f_ref) -> dict:
    d = f_x - f_ref
    return {"F_mae_eV_A": float(np.abs(d).mean()), "F_rmse_eV_A": float(np.sqrt((d ** 2).mean())),
            "F_r": float(np.corrcoef(f_x.ravel(), f_ref.ravel())[0, 1]),
            "F_rms_dft_eV_A": float(np.sqrt((f_ref ** 2).mean())),
            "F_rms_xtb_eV_A": float(np.sqrt((f_x ** 2).mean()))}


def label_dft_frames(path: Path = START["ac_ala3_nhme"], out_dir: Path = RESULTS, make_calc=make_xtb) -> dict:
    """GFN2-xTB labels of the MD22 DFT frames in ``path`` (energy ``info['Energy']`` in kcal/mol,
    forces kcal/mol/Å) and the xTB−DFT differences, written to ``out_dir/xtb_vs_dft.{md,json}``."""
    frames = ase.io.read(path, index=":")
    rows, fx_all, fd_all, dE, times = [], [], [], [], []
    calc = make_calc()
    for i, a in enumerate(frames):
        e_dft, f_dft = float(a.info["Energy"]) * KCAL, a.get_forces() * KCAL  # -> eV, eV/Å
        b = Atoms(a.numbers, positions=a.positions)
        b.calc = calc
        t = time.perf_counter()
        e_x, f_x = b.get_potential_energy(), b.get_forces()
        times.append(time.perf_counter() - t)
        rows.append({"frame": i, "E_dft_eV": e_dft, "E_xtb_eV": float(e_x), **_fstats(f_x, f_dft)})
        fx_all.append(f_x.ravel())
        fd_all.append(f_dft.ravel())
        dE.append(e_x - e_dft)
    fx, fd, dE = np.concatenate(fx_all), np.concatenate(fd_all), np.array(dE)
    # unit check: DFT energy differences between consecutive frames vs the trapezoid work of the forces
    work = [float(b.info["Energy"] - a.info["Energy"]
                  + 0.5 * ((a.get_forces() + b.get_forces()) * (b.positions - a.positions)).sum())
            for a, b in zip(frames, frames[1:])]
    res = {"file": str(path), "n_frames": len(frames), "n_atoms": len(frames[0]), "method": METHOD,
           "tblite_version": metadata.version("tblite") if make_calc is make_xtb else None,
           "dft_units": "energy info['Energy'] kcal/mol, forces kcal/mol/Å (MD22, PBE+MBD)",
           **_fstats(fx, fd),
           "dE_mean_eV": float(dE.mean()), "dE_std_eV": float(dE.std()), "dE_spread_eV": float(np.ptp(dE)),
           "E_dft_spread_eV": float(np.ptp([r["E_dft_eV"] for r in rows])),
           "units_check_max_abs_dE_plus_work_kcal_mol": float(np.max(np.abs(work))),
           "s_per_xtb_eval": float(np.median(times)),
           "rmsd_neighbours_A": float(np.mean([np.sqrt(((b.positions - a.positions) ** 2).sum(1).mean())
                                               for a, b in zip(frames, frames[1:])])), "frames": rows}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(out_dir / "xtb_vs_dft.json", res)
    k = 1 / KCAL
    lines = ["# GFN2-xTB vs MD22 DFT (PBE+MBD) on the 5 Ac-Ala3-NHMe frames", "",
             f"`python experiments/xtb_data/gen_xtb.py --label-dft-frames` on `{Path(path).name}` "
             f"({res['n_frames']} frames, {res['n_atoms']} atoms; tblite {res['tblite_version']}).", "",
             "| frame | F MAE (eV/Å) | F RMSE (eV/Å) | F MAE (kcal/mol/Å) | F RMSE (kcal/mol/Å) | r(F) | "
             "F rms DFT / xTB (eV/Å) | E_xtb − E_dft − mean (meV) |", "|---|---|---|---|---|---|---|---|"]
    def row(name, r, de):
        return (f"| {name} | {r['F_mae_eV_A']:.3f} | {r['F_rmse_eV_A']:.3f} | {r['F_mae_eV_A'] * k:.2f} | "
                f"{r['F_rmse_eV_A'] * k:.2f} | {r['F_r']:.3f} | {r['F_rms_dft_eV_A']:.3f} / "
                f"{r['F_rms_xtb_eV_A']:.3f} | {de} |")

    lines += [row(r["frame"], r, f"{(x - dE.mean()) * 1e3:+.1f}") for r, x in zip(rows, dE)]
    lines.append(row("all", res, f"std {res['dE_std_eV'] * 1e3:.1f}"))
    lines += ["", f"Energies differ by a constant offset (mean E_xtb − E_dft = {res['dE_mean_eV']:.2f} eV); after "
              f"removing it the spread has std {res['dE_std_eV'] * 1e3:.1f} meV ({res['dE_std_eV'] * k:.2f} kcal/mol), "
              f"range {res['dE_spread_eV'] * 1e3:.1f} meV, against a DFT energy range of "
              f"{res['E_dft_spread_eV'] * 1e3:.0f} meV over these frames.",
              "", f"The frames are consecutive MD steps (RMSD {res['rmsd_neighbours_A']:.3f} Å between neighbours), "
              "a very short stretch of one trajectory: these figures show the size of the xTB–DFT gap, not a "
              "converged statistic. Frame 0 has the lowest energy and smallest forces, hence the worst r.",
              f"Units check: consecutive DFT energy differences match the trapezoid work of the stored forces to "
              f"{res['units_check_max_abs_dE_plus_work_kcal_mol']:.3f} kcal/mol, so the forces are kcal/mol/Å.",
              f"Time per GFN2-xTB energy+forces: {res['s_per_xtb_eval']:.3f} s (median over the frames, one calculator, OMP_NUM_THREADS as set)."]
    (out_dir / "xtb_vs_dft.md").write_text("\n".join(lines) + "\n")
    return res


def check_labels(path: Path, n_frames: int, make_calc=make_xtb, h_A: float = 1e-3, n_dirs: int = 2,
                 seed: int = 0) -> dict:
    """Recompute ``n_frames`` evenly spaced frames of a merged set and test its forces against
    its energies.  For each frame and ``n_dirs`` random unit directions u (over all 3N
    coordinates), the central difference

        dE/dh = [E(R + h u) - E(R - h u)] / (2h),   error O(h^2),

    must equal -F.u (forces are the negative gradient of the energy).  Returns the stored-vs-
    recomputed differences and the largest |dE/dh + F.u| (eV/Å) beside the rms of F.u."""
    ds = read(path)  # eV, Å
    rng = np.random.default_rng(seed)
    calc = make_calc()
    idx = np.linspace(0, len(ds.energy) - 1, n_frames).round().astype(int)
    rows = []

    def energy_forces(numbers, r):
        a = Atoms(numbers, positions=r)
        a.calc = calc
        return float(a.get_potential_energy()), a.get_forces()

    for i in idx:
        z, r0 = ds.numbers[i], np.asarray(ds.positions[i], float)
        e0, f0 = energy_forces(z, r0)
        for _ in range(n_dirs):
            u = rng.normal(size=r0.shape)
            u /= np.linalg.norm(u)
            fd = (energy_forces(z, r0 + h_A * u)[0] - energy_forces(z, r0 - h_A * u)[0]) / (2 * h_A)
            rows.append({"frame": int(i), "dE_dh_eV_A": fd, "minus_F_dot_u_eV_A": float(-(f0 * u).sum()),
                         "stored_minus_F_dot_u_eV_A": float(-(np.asarray(ds.forces[i]) * u).sum()),
                         "E_recomputed_minus_stored_eV": e0 - float(ds.energy[i]),
                         "F_recomputed_max_abs_diff_eV_A": float(np.abs(f0 - ds.forces[i]).max())})
    gap = [abs(r["dE_dh_eV_A"] - r["stored_minus_F_dot_u_eV_A"]) for r in rows]
    return {"file": os.path.relpath(Path(path).resolve(), ROOT), "n_frames": len(idx), "n_directions": n_dirs, "h_A": h_A, "method": METHOD,
            "max_abs_fd_minus_stored_force_eV_A": float(max(gap)),
            "rms_F_dot_u_eV_A": float(np.sqrt(np.mean([r["minus_F_dot_u_eV_A"] ** 2 for r in rows]))),
            "max_abs_E_recomputed_minus_stored_eV": float(max(abs(r["E_recomputed_minus_stored_eV"]) for r in rows)),
            "max_abs_F_recomputed_minus_stored_eV_A": float(max(r["F_recomputed_max_abs_diff_eV_A"] for r in rows)),
            "rows": rows}


def _keep_guess(make_calc):
    """A calculator factory whose ``reset`` clears the results but keeps tblite's last
    wavefunction (``_res``), as the generator did before it reset at every frame."""
    def make():
        calc = make_calc()
        calc.reset = calc.results.clear
        return calc
    return make


def check_resume(molecule: str, n_frames: int, work: Path, make_calc=make_xtb, **md) -> dict:
    """Run ``n_frames`` (no equilibration) once uninterrupted and once stopped after half and
    resumed, with the calculator reset at every frame (the generator) and with its SCF guess
    kept (the generator before 2026-12-06); report the largest position and force differences
    between the two runs' frames.  ``md`` goes to :func:`langevin_frames` (not equilibrate_fs)."""
    start = ase.io.read(START[molecule], index=0)
    res = {"molecule": molecule, "n_frames": n_frames, "stopped_after": n_frames // 2, "md": md}
    for name, factory in (("reset_every_frame", make_calc), ("guess_kept", _keep_guess(make_calc))):
        a, b = Path(work) / name / "a", Path(work) / name / "b"
        run_shard(a, start, factory, n_frames, {"check": name}, log=lambda m: None, **md)
        run_shard(b, start, factory, n_frames // 2, {"check": name}, log=lambda m: None, **md)
        run_shard(b, start, factory, n_frames, {"check": name}, log=lambda m: None, **md)
        fa, fb = read_frames(a), read_frames(b)
        res[name] = {"identical_files": (a / "frames.extxyz").read_bytes() == (b / "frames.extxyz").read_bytes(),
                     "max_abs_dR_A": float(max(np.abs(x.positions - y.positions).max() for x, y in zip(fa, fb))),
                     "max_abs_dF_eV_A": float(max(np.abs(x.get_forces() - y.get_forces()).max()
                                                  for x, y in zip(fa, fb)))}
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecule", choices=sorted(START), default="ac_ala3_nhme")
    p.add_argument("--n-frames", type=int, default=6000, help="frames over all shards")
    p.add_argument("--temperature", dest="temperature_K", type=float, default=500.0, help="K")
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--stride-fs", type=float, default=10.0, help="sample every this many fs")
    p.add_argument("--friction-per-fs", "--friction", type=float, default=0.01,
                   help="Langevin friction in 1/fs (0.01: 100 fs relaxation time, see README)")
    p.add_argument("--equilibrate-fs", type=float, default=1000.0, help="discarded at the start of each shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", default="0/1", help="k/K: this shard's index and the number of shards")
    p.add_argument("--out-dir", type=Path, default=DATA)
    p.add_argument("--collect", action="store_true", help="merge the shards of --molecule into one npz")
    p.add_argument("--label-dft-frames", action="store_true", help="xTB vs DFT on the 5 MD22 Ac-Ala3-NHMe frames")
    p.add_argument("--check-labels", type=int, metavar="N", default=0,
                   help="recompute N frames of the merged set and check forces = -dE/dx by central differences")
    p.add_argument("--check-resume", type=int, metavar="N", default=0,
                   help="N frames uninterrupted vs stopped at N/2 and resumed, in a temporary folder")
    a = p.parse_args(argv)
    md = dict(temperature_K=a.temperature_K, timestep_fs=a.timestep_fs, stride_fs=a.stride_fs,
              friction_per_fs=a.friction_per_fs)
    if a.check_resume:
        with tempfile.TemporaryDirectory() as work:
            res = dict(check_resume(a.molecule, a.check_resume, Path(work), seed=[a.seed, 0], **md), date=time.strftime("%Y-%m-%d %H:%M:%S"),
                       command=" ".join(["gen_xtb.py", *sys.argv[1:]]), tblite_version=metadata.version("tblite"))
        _write_json_atomic(RESULTS / f"{a.molecule}_resume_check.json", res)
        log(json.dumps({k: res[k] for k in ("reset_every_frame", "guess_kept")}))
        return
    if a.check_labels:
        path = Path(a.out_dir) / f"xtb_{a.molecule}_{a.temperature_K:.0f}K.npz"
        res = dict(check_labels(path, a.check_labels), command=" ".join(["gen_xtb.py", *sys.argv[1:]]),
                   date=time.strftime("%Y-%m-%d %H:%M:%S"), tblite_version=metadata.version("tblite"))
        _write_json_atomic(RESULTS / f"{a.molecule}_{a.temperature_K:.0f}K_label_check.json", res)
        log(f"|dE/dh + F.u| <= {res['max_abs_fd_minus_stored_force_eV_A']:.2e} eV/Å (rms F.u "
            f"{res['rms_F_dot_u_eV_A']:.3f}); recomputed E within {res['max_abs_E_recomputed_minus_stored_eV']:.1e} eV")
        return
    if a.label_dft_frames:
        res = label_dft_frames()
        log(f"xTB vs DFT: F MAE {res['F_mae_eV_A']:.3f} eV/Å, r {res['F_r']:.3f}, dE std {res['dE_std_eV']:.4f} eV")
        return
    if a.collect:
        shards = sorted(Path(a.out_dir, a.molecule).glob("shard_*of*"))
        out = Path(a.out_dir) / f"xtb_{a.molecule}_{a.temperature_K:.0f}K.npz"
        summary = collect(shards, out, name=f"{a.molecule} GFN2-xTB Langevin MD")
        if Path(a.out_dir).resolve() == DATA.resolve():  # the repo's own set: record it in results/
            record_collected(summary, a.molecule, f"{a.temperature_K:.0f}K")
        print(json.dumps(summary, indent=1))
        return
    k, n_shards = (int(x) for x in a.shard.split("/"))
    if not 0 <= k < n_shards:
        raise SystemExit(f"--shard {a.shard}: need 0 <= k < K")
    frames = ase.io.read(START[a.molecule], index=":")
    start_index = k % len(frames)
    settings = {"method": METHOD, "code": "tblite (ASE calculator, verbosity 0)", "molecule": a.molecule,
                "start_file": str(START[a.molecule].relative_to(ROOT.parent)), "start_frame": start_index,
                "shard": f"{k}/{n_shards}", "seed": a.seed,
                "thermostat": "ase.md.langevin.Langevin, fixcm=False + FixCom; initial velocities Maxwell-Boltzmann "
                              "at T, Stationary, ZeroRotation", "units": "extxyz: Å, eV, eV/Å",
                "scf": "calculator reset before every frame's labels (fresh SCF guess)",
                "versions": {"tblite": metadata.version("tblite"), "ase": metadata.version("ase")}}
    n_mine = a.n_frames // n_shards + (k < a.n_frames % n_shards)
    run_shard(shard_dir(a.out_dir, a.molecule, k, n_shards), frames[start_index], make_xtb, n_mine, settings,
              seed=[a.seed, k], equilibrate_fs=a.equilibrate_fs, **md)


if __name__ == "__main__":
    main()
