"""Shared machinery of the committee benchmarks (lode_dimers.py, hdnnp4g.py): one record per
cell, written by whichever worker takes the cell's lock first; mean ± sample std over members;
the long-range column chosen from validation errors only."""

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


def stale(lock) -> bool:
    """Whether a cell's lock was left by a worker of this host that no longer runs (an empty
    lock older than a minute, from before locks named their worker, counts as stale)."""
    try:
        text, age = lock.read_text(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if len(text.split()) != 2:  # empty: an old lock, or one whose worker is writing its name now
        return age > 60
    host, pid = text.split()
    if host != platform.node():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def run_cells(cells, record_path, run_one, describe):
    """Run each cell (a tuple of run_one's arguments) whose record does not exist yet.

    A lock file per cell ("host pid" of its worker) lets several workers share the list; a
    lock left by a worker of this host that is no longer running (killed, or a crash) is taken
    over, one of another host must be deleted by hand.  A cell whose run raises releases its
    lock.  Each record is written to a temporary file and renamed, so a record on disk is always
    whole.  ``describe(record)`` is the progress line."""
    for cell in cells:
        path = record_path(*cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_suffix(".lock")
        if path.exists() or (lock.exists() and not stale(lock)):
            continue
        if lock.exists():
            print(f"{lock.name}: its worker is gone; taking the cell over", flush=True)
            lock.unlink(missing_ok=True)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, f"{platform.node()} {os.getpid()}".encode())
        os.close(fd)
        try:
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
