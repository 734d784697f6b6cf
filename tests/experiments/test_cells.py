"""experiments/longrange/cells.py: the per-cell locks that let workers share a grid."""

import importlib.util
import os
import platform
import subprocess
import sys
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
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a process of this host that has exited
    (tmp_path / "a.lock").write_text(f"{platform.node()} {os.getpid()}")  # alive: this test
    (tmp_path / "b.lock").write_text(f"{platform.node()} {dead}")
    assert cells.stale(tmp_path / "b.lock") and not cells.stale(tmp_path / "a.lock")
    assert not cells.stale(tmp_path / "missing.lock")
    (tmp_path / "c.lock").write_text(f"another-host {dead}")  # cannot be checked from here
    assert not cells.stale(tmp_path / "c.lock")
    (tmp_path / "c.lock").write_text("")  # empty and new: its worker may be writing its name now
    assert not cells.stale(tmp_path / "c.lock")
    os.utime(tmp_path / "c.lock", (0, 0))
    assert cells.stale(tmp_path / "c.lock")
    (tmp_path / "c.lock").unlink()
    ran = []
    names = grid(tmp_path, lambda c: ran.append(c) or {"cell": c, "train_time_s": 1.0})
    assert ran == ["b"] and names == ["a.lock", "b.json"]  # a: held by a live worker


def test_a_failed_cell_releases_its_lock(tmp_path):
    def boom(c):
        raise RuntimeError(f"cell {c} failed")

    with pytest.raises(RuntimeError, match="cell a failed"):
        grid(tmp_path, boom)
    assert list(tmp_path.iterdir()) == []  # no record, no lock: the next worker retries it
