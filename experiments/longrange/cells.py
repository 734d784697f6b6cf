"""Shared machinery of the committee benchmarks (lode_dimers.py, hdnnp4g.py): one record per
cell, written by whichever worker takes the cell's lock first; mean ± sample std over members;
the long-range column chosen from validation errors only."""

import fcntl
import json
import os
import platform
import shlex
import sys
import time

import numpy as np


def provenance():
    """What every record carries about how and where it was made."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg(), "host": platform.node(),
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])}


def run_cells(cells, record_path, run_one, describe):
    """Run each cell (a tuple of run_one's arguments) whose record does not exist yet.

    Several workers can share the list: a worker holds an exclusive ``flock`` on the cell's
    .lock file while it runs the cell (as thesis_table.py does), and the others skip the cell;
    the kernel releases the lock when its worker exits or is killed, so a leftover .lock file
    holds nothing.  Each record is written to a temporary file and renamed, so a record on disk
    is always whole.  ``describe(record)`` is the progress line."""
    for cell in cells:
        path = record_path(*cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_suffix(".lock")
        if path.exists():
            continue
        with open(lock, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker is running it
                continue
            try:
                if path.exists():  # finished by another worker meanwhile
                    continue
                r = run_one(*cell)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(r, indent=1))
                tmp.rename(path)
            finally:
                lock.unlink(missing_ok=True)
        print(f"[{time.strftime('%H:%M:%S')}] {' '.join(map(str, cell))}: {describe(r)} "
              f"({r['train_time_s']:.0f} s)", flush=True)


def load_records(runs_dir, fields):
    """Every record in ``runs_dir``, keyed by the tuple of its ``fields``."""
    recs = {}
    for p in sorted(runs_dir.glob("*.json")):
        r = json.loads(p.read_text())
        recs[tuple(r[f] for f in fields)] = r
    return recs


def stats(values, scale=1e3):
    """(mean, sample std) of ``scale * values``; std 0 for a single value."""
    v = scale * np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def choose(val_mae, rows, columns, base="local"):
    """The long-range column with the smallest geometric mean over ``rows`` of (mean validation
    error / ``base``'s), from ``val_mae[(row, column)]`` (per-member lists) only.

    Returns (choice, {column: score}) over the columns that have every row; (None, {}) while the
    base column is incomplete."""
    if not all((r, base) in val_mae for r in rows):
        return None, {}
    ref = {r: np.mean(val_mae[(r, base)]) for r in rows}
    scores = {}
    for c in columns:
        if c != base and all((r, c) in val_mae for r in rows):
            scores[c] = float(np.exp(np.mean(np.log([np.mean(val_mae[(r, c)]) / ref[r] for r in rows]))))
    return (min(scores, key=scores.get) if scores else None), scores
