"""Two jax.distributed processes on localhost (gloo CPU collectives) train to the same
parameters as one process: both processes end with identical weights, process 0 alone
writes the checkpoint, and it equals the single-process run's to float32 round-off.
Batch size 3 over 2 devices: the last shard of every batch is padding of weight 0."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lrnn import checkpoint as ckpt
from lrnn import models
from lrnn.nn import split
from lrnn.train import load_config, train
from tests.conftest import FAST_COMPILE, TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, sys
out, pid, nproc, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, sys.argv[5])
from lrnn.train import distributed, load_config, train
if nproc > 1:
    distributed.initialize(f"localhost:{port}", nproc, pid)
from tests.train.test_multiprocess import config
summary = train(load_config(config(out)), quiet=True)
print("RESULT" + json.dumps(summary))
"""


def config(out):
    return {"data": {"train": "embedded:paracetamol", "n_train": 30, "n_val": 6, "seed": 1},
            "model": dict(TINY_MODEL), "output": str(out),
            "train": {"max_steps": 20, "batch_size": 3, "checkpoint_every_s": 0, "progress": False,
                      "lr_start": 1e-3, "lr_stop": 1e-4, "decay_steps": 10}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_end_equal_to_one(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = FAST_COMPILE  # one CPU device per process (no forced device count)
    port = str(_free_port())

    def launch(out, pid, nproc):
        return subprocess.Popen([sys.executable, "-c", WORKER, str(out), str(pid), str(nproc), port, str(ROOT)],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [launch(tmp_path / "two", 0, 2), launch(tmp_path / "two", 1, 2)]
    one = train(load_config(config(tmp_path / "one")), quiet=True)  # the one-process run, here meanwhile
    res = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        res.append(json.loads(stdout.split("RESULT")[-1]))
    two0, two1 = res
    assert two0["steps"] == two1["steps"] == one["steps"] == 20
    assert two0["params_sha256"] == two1["params_sha256"]  # the replicas agree bit for bit
    # one checkpoint, written by process 0, equal to the single-process run's
    _, two, _ = ckpt.load(tmp_path / "two" / "last")
    _, ref, _ = ckpt.load(tmp_path / "one" / "last")
    assert sum(x.size for x in ref) > 100
    for a, b in zip(ref, two):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6)
    # the 20 steps moved the parameters: not a comparison of untouched initial values
    init = jax.tree.leaves(split(models.create(dict(TINY_MODEL, type_map=[1, 6, 7, 8]), seed=0))[1])
    assert max(np.abs(a - np.asarray(b)).max() for a, b in zip(ref, init)) > 1e-3
    assert (tmp_path / "two" / "metrics.csv").exists()


def test_initialize_rejects_half_a_rank_spec():
    from lrnn.train import distributed

    with pytest.raises(ValueError, match="both num_processes and process_id"):
        distributed.initialize("localhost:1", num_processes=2)
    with pytest.raises(ValueError, match="outside 0..1"):
        distributed.initialize("localhost:1", num_processes=2, process_id=2)
