"""Keep the pool arms' active-learning runs in the repository, so that a run outlives its checkout.

A run directory (``runs/active_learning/<arm>_<r>``, git-ignored) holds every round's
committee, and a checkout starts without it; the ``pool`` and ``qbc`` arms need more hours
than one session has.  Their labels are frames of the xTB pool file, so a run is small once
described by pool indices.  After each finished round, ``save`` writes into the committed
``KEEP/<arm>_<r>/``:

- ``state.json``: the pool file's sha256, the finished rounds' records (checkpoint paths
  relative to the run directory), and the ``info`` of each label (round, index in the round,
  pool index), labels of unfinished rounds left out;
- ``al_metrics.csv``, as written by ``lrnn.al.run_al``;
- ``checkpoint_<round dir>/``: the newest finished round's committee, the warm start of the
  next round (written before ``state.json`` names it; older ones are removed after).

``restore`` rebuilds the run directory in a checkout that holds fewer finished rounds than
``state.json``: labels from the pool file (its sha256 must match: the pool file is rewritten
from the committed xTB set by each checkout), round records, the newest committee.  ``run_al`` then
resumes at the next round; a round cut off half-way is trained again from its start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import ase.io
from ase import Atoms

from lrnn import checkpoint


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finished_rounds(run_dir: Path) -> list[dict]:
    """The round records on disk in ``run_dir``, in round order."""
    recs = [json.loads(p.read_text()) for p in run_dir.glob("*/round.json")]
    return sorted(recs, key=lambda r: r["round"])


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _state(keep_dir: Path) -> dict | None:
    path = keep_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def save(run_dir: Path, keep_dir: Path, pool_path: Path) -> bool:
    """Copy ``run_dir``'s finished rounds into ``keep_dir`` (see module docstring); False
    when ``keep_dir`` already holds as many rounds."""
    run_dir, keep_dir = Path(run_dir), Path(keep_dir)
    rounds = finished_rounds(run_dir)
    old = _state(keep_dir)
    if not rounds or (old is not None and len(old["rounds"]) >= len(rounds)):
        return False
    last = rounds[-1]["round"]
    labels = run_dir / "labels.extxyz"
    frames = ase.io.read(labels, ":", format="extxyz") if labels.exists() and labels.stat().st_size else []
    infos = [{k: v for k, v in a.info.items() if k != "energy"} for a in frames if a.info["al_round"] <= last]
    recs = [dict(r, checkpoint=str(Path(r["checkpoint"]).relative_to(run_dir))) for r in rounds]
    ckpt_name = "checkpoint_" + Path(recs[-1]["checkpoint"]).parts[0]
    keep_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.copy(rounds[-1]["checkpoint"], keep_dir / ckpt_name)
    _write_text(keep_dir / "al_metrics.csv", (run_dir / "al_metrics.csv").read_text())
    _write_text(keep_dir / "state.json", json.dumps({"pool_sha256": sha256(pool_path), "rounds": recs,
                                                     "checkpoint": ckpt_name, "labels": infos}, indent=1,
                                                    default=lambda x: x.item()))  # numpy scalars
    for p in keep_dir.glob("checkpoint_*"):
        if p.name != ckpt_name:
            shutil.rmtree(p)
    return True


def restore(run_dir: Path, keep_dir: Path, pool_path: Path) -> bool:
    """Rebuild ``run_dir`` from ``keep_dir`` when it holds fewer finished rounds (see module
    docstring); False when there is nothing to restore."""
    run_dir, keep_dir = Path(run_dir), Path(keep_dir)
    state = _state(keep_dir)
    if state is None or len(finished_rounds(run_dir)) >= len(state["rounds"]):
        return False
    if sha256(pool_path) != state["pool_sha256"]:
        raise SystemExit(f"{keep_dir}: its labels index a pool file with sha256 {state['pool_sha256'][:12]}..., "
                         f"but {pool_path} has {sha256(pool_path)[:12]}... (the xTB set was regenerated "
                         "differently): the kept run cannot be resumed on it")
    pool = ase.io.read(pool_path, ":", format="extxyz")
    tmp = run_dir.with_name(run_dir.name + ".restore-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    frames = []
    for info in state["labels"]:
        ref = pool[int(info["pool_index"])]
        a = Atoms(numbers=ref.numbers, positions=ref.positions, cell=ref.cell, pbc=ref.pbc)
        a.info.update(info, energy=float(ref.get_potential_energy()))
        a.arrays["forces"] = ref.get_forces()
        frames.append(a)
    if frames:
        ase.io.write(tmp / "labels.extxyz", frames, format="extxyz")
    (tmp / "al_metrics.csv").write_text((keep_dir / "al_metrics.csv").read_text())
    for rec in state["rounds"]:
        rel = Path(rec["checkpoint"])
        (tmp / rel.parts[0]).mkdir()
        (tmp / rel.parts[0] / "round.json").write_text(json.dumps(dict(rec, checkpoint=str(run_dir / rel)), indent=1))
    checkpoint.copy(keep_dir / state["checkpoint"], tmp / state["rounds"][-1]["checkpoint"])
    shutil.rmtree(run_dir, ignore_errors=True)
    os.replace(tmp, run_dir)
    return True
