"""Checkpoints: an orbax PyTree of arrays plus ``lrnn.json`` (config, statistics, shifts).

A checkpoint directory holds::

    lrnn.json       model config, normalisation stats, per-element energy shifts (eV),
                    dtype, units, a SHA-256 of the parameters, training metadata
    params/         orbax checkpoint of the parameter leaves
    train_state/    (optional) orbax checkpoint of the optimiser state, for --resume

Writes go to a temporary sibling directory that is renamed into place only when complete,
so a crash mid-write never corrupts the last good checkpoint.  Loading checks the file
list, the JSON and the checksum and raises :class:`CheckpointError` naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

FORMAT = "lrnn-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt."""


def _checksum(leaves) -> str:
    h = hashlib.sha256()
    for x in leaves:
        a = np.ascontiguousarray(np.asarray(x))
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _to_dict(leaves):
    return {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}


def _from_dict(d):
    return [np.asarray(d[k]) for k in sorted(d)]


def _quiet_orbax():
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def _checkpointer():
    """An orbax checkpointer local to this process: the leaves are host NumPy arrays, and in
    a distributed run process 0 alone writes (orbax's default waits for every process)."""
    import orbax.checkpoint as ocp

    here = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                              active_processes={jax.process_index()})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=here), multiprocessing_options=here)


def _orbax_save(path, leaves):
    _quiet_orbax()
    ckptr = _checkpointer()
    ckptr.save(os.path.abspath(path), {"leaves": _to_dict(leaves)} if leaves else {"leaves": {"empty": np.zeros(0)}})


def _orbax_load(path):
    tree = _checkpointer().restore(os.path.abspath(path))
    d = tree["leaves"]
    return [] if set(d) == {"empty"} else _from_dict(d)


def save(path, *, meta: dict, params, train_state=None) -> Path:
    """Atomically write a checkpoint (see module docstring).  ``params`` and
    ``train_state`` are pytrees; only their leaves are stored (the structure is rebuilt
    from the model config on load)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    _orbax_save(tmp / "params", leaves)
    meta = dict(meta, format=FORMAT, version=VERSION, checksum=_checksum(leaves), n_leaves=len(leaves))
    if train_state is not None:
        ts_leaves = [np.asarray(x) for x in jax.tree.leaves(train_state)]
        _orbax_save(tmp / "train_state", ts_leaves)
        meta["train_state_checksum"] = _checksum(ts_leaves)
    with open(tmp / "lrnn.json", "w") as fh:
        json.dump(meta, fh, indent=1, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def copy(src, dest) -> Path:
    """Copy the checkpoint directory ``src`` to ``dest``, replacing it only once the copy is
    complete (write, then rename: an interrupted copy never leaves a half checkpoint)."""
    src, dest = Path(src), Path(dest)
    if not (src / "lrnn.json").exists():
        raise FileNotFoundError(f"no checkpoint at {src} (lrnn.json missing)")
    tmp = dest.with_name(f"{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def _json_default(x):
    if isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__"):
        return np.asarray(x).tolist()
    raise TypeError(f"cannot serialise {type(x)}")


def _resolve(path) -> Path:
    path = Path(path)
    if not path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():  # a crash between the two renames of save()
            return old
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        raise CheckpointError(f"{path} is a file; an lrnn checkpoint is a directory with lrnn.json and params/")
    return path


def read_meta(path) -> dict:
    path = _resolve(path)
    jf = path / "lrnn.json"
    if not jf.exists():
        raise CheckpointError(f"{path} is not an lrnn checkpoint or is truncated: lrnn.json is missing")
    try:
        meta = json.loads(jf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{jf} is corrupt (invalid JSON: {e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{jf} is not an lrnn checkpoint (format={meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer lrnn (version {meta['version']})")
    return meta


def load(path, *, with_train_state: bool = False):
    """Return ``(meta, param_leaves, train_state_leaves_or_None)``; raise
    :class:`CheckpointError` for missing, truncated or corrupt checkpoints."""
    path = _resolve(path)
    meta = read_meta(path)
    if not (path / "params").exists():
        raise CheckpointError(f"{path} is truncated: params/ is missing")
    try:
        leaves = _orbax_load(path / "params")
    except Exception as e:  # orbax raises many types for damaged files
        raise CheckpointError(f"{path}/params is corrupt or truncated: {type(e).__name__}: {e}") from e
    if len(leaves) != meta.get("n_leaves") or _checksum(leaves) != meta.get("checksum"):
        raise CheckpointError(f"{path} is corrupt: parameter checksum does not match lrnn.json")
    ts = None
    if with_train_state:
        if not (path / "train_state").exists():
            raise CheckpointError(f"{path} has no train_state/: cannot resume from it")
        try:
            ts = _orbax_load(path / "train_state")
        except Exception as e:
            raise CheckpointError(f"{path}/train_state is corrupt: {type(e).__name__}: {e}") from e
        if _checksum(ts) != meta.get("train_state_checksum"):
            raise CheckpointError(f"{path} is corrupt: train-state checksum does not match lrnn.json")
    return meta, leaves, ts
