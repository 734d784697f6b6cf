"""experiments/longrange/cells.py: the per-cell locks that let workers share a grid."""

import fcntl
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("cells", ROOT / "experiments/longrange/cells.py")
cells = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cells)


def grid(tmp_path, run_one):
    cells.run_cells([("a",), ("b",)], lambda c: tmp_path / f"{c}.json", run_one, lambda r: "done")
    return sorted(p.name for p in tmp_path.iterdir())


def test_locks_of_live_workers_are_respected_and_dead_ones_taken_over(tmp_path):
    """a.lock is held (flock) by a live worker: skipped.  b.lock is a file left by a killed
    worker: its flock went with the process, so the cell runs."""
    (tmp_path / "b.lock").write_text("")
    with open(tmp_path / "a.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ran = []
        names = grid(tmp_path, lambda c: ran.append(c) or {"cell": c, "train_time_s": 1.0})
    assert ran == ["b"] and names == ["a.lock", "b.json"]  # a: held by a live worker


def test_a_failed_cell_releases_its_lock(tmp_path):
    def boom(c):
        raise RuntimeError(f"cell {c} failed")

    with pytest.raises(RuntimeError, match="cell a failed"):
        grid(tmp_path, boom)
    assert list(tmp_path.iterdir()) == []  # no record, no lock: the next worker retries it
