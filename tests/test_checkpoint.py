"""Truncated or corrupt checkpoints give a clear error."""

import shutil

import numpy as np
import pytest

import lrnn
from lrnn.checkpoint import CheckpointError


@pytest.fixture
def copy(trained_checkpoint, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(trained_checkpoint, dst)
    return dst


def test_missing_json(copy):
    (copy / "lrnn.json").unlink()
    with pytest.raises(CheckpointError, match="lrnn.json is missing"):
        lrnn.load(copy)


def test_truncated_json(copy):
    text = (copy / "lrnn.json").read_text()
    (copy / "lrnn.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="invalid JSON"):
        lrnn.load(copy)


def test_missing_params(copy):
    shutil.rmtree(copy / "params")
    with pytest.raises(CheckpointError, match="params/ is missing"):
        lrnn.load(copy)


def test_corrupted_param_bytes(copy):
    files = sorted(p for p in (copy / "params").rglob("*") if p.is_file() and p.stat().st_size > 200)
    damaged = 0
    for f in files:
        b = bytearray(f.read_bytes())
        for k in range(len(b) // 3, len(b) // 3 + 64):
            b[k] ^= 0xFF
        f.write_bytes(bytes(b))
        damaged += 1
    assert damaged
    with pytest.raises(CheckpointError, match="corrupt"):
        lrnn.load(copy)


def test_truncated_param_files(copy):
    for f in (copy / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(CheckpointError):
        lrnn.load(copy)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        lrnn.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        lrnn.load(tmp_path / "file")
    np.save(tmp_path / "a.npy", np.zeros(2))


def test_copy_replaces_the_destination_with_a_loadable_checkpoint(trained_checkpoint, tmp_path):
    from lrnn import checkpoint

    dest = tmp_path / "results" / "checkpoint"
    dest.mkdir(parents=True)
    (dest / "stale").write_text("old")  # an earlier checkpoint there is replaced, not merged
    assert checkpoint.copy(trained_checkpoint, dest) == dest
    assert not (dest / "stale").exists() and not dest.with_name("checkpoint.tmp").exists()
    a, b = lrnn.load(trained_checkpoint), lrnn.load(dest)
    x = np.zeros((3, 3)) + np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert a.energy_forces(x, [8, 1, 1])[0] == b.energy_forces(x, [8, 1, 1])[0]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.copy(tmp_path / "nothing", tmp_path / "out")
