"""Data-parallel training (train.devices): 1, 2 and 4 devices give the same parameters
(1 and 4 from scratch; 2 in the first half of a run resumed on 4).

Runs in a subprocess with 4 fake CPU devices (XLA_FLAGS must be set before JAX starts).
Batch size 3 does not divide over 2 or 4 devices, so the last shard holds padding of weight 0.
A run stopped after 10 steps on 2 devices and resumed on 4 ends equal too."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import jax
from lrnn import checkpoint as ckpt
from lrnn.train import load_config, train
from tests.conftest import TINY_MODEL
out = {}
assert len(jax.local_devices()) == 4, jax.local_devices()
for n in (1, 4):  # 2 devices: the first half of the resumed run
    cfg = {"data": {"train": "embedded:paracetamol", "n_train": 30, "n_val": 6, "seed": 1},
           "model": dict(TINY_MODEL), "output": f"{sys.argv[1]}/d{n}",
           "train": {"max_steps": 20, "batch_size": 3, "checkpoint_every_s": 0, "progress": False, "devices": n,
                     "lr_start": 1e-3, "lr_stop": 1e-4, "decay_steps": 10}}
    train(load_config(cfg), quiet=True)
    _, leaves, _ = ckpt.load(f"{sys.argv[1]}/d{n}/last")
    out[n] = [l.tolist() for l in leaves]
# resume on another device count: 10 steps on 2 devices, the other 10 on 4
for n, extra, resume in ((2, {"max_epochs": 1}, False), (4, {}, True)):
    cfg = {"data": {"train": "embedded:paracetamol", "n_train": 30, "n_val": 6, "seed": 1},
           "model": dict(TINY_MODEL), "output": f"{sys.argv[1]}/resumed",
           "train": {"max_steps": 20, "batch_size": 3, "checkpoint_every_s": 0, "progress": False, "devices": n,
                     "lr_start": 1e-3, "lr_stop": 1e-4, "decay_steps": 10, **extra}}
    train(load_config(cfg), resume=resume, quiet=True)
_, leaves, _ = ckpt.load(f"{sys.argv[1]}/resumed/last")
out["resumed"] = [l.tolist() for l in leaves]
from lrnn import models
from lrnn.nn import split
init = split(models.create(dict(TINY_MODEL, type_map=[1, 6, 7, 8]), seed=0))[1]
out["init"] = [l.tolist() for l in jax.tree.leaves(init)]
print("RESULT" + json.dumps(out))
"""


def test_one_two_four_devices_give_the_same_parameters(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(root)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT")[-1])
    ref = [np.asarray(x) for x in res["1"]]
    assert sum(x.size for x in ref) > 100
    for n in ("4", "resumed"):
        for a, b in zip(ref, res[n]):
            np.testing.assert_allclose(np.asarray(b), a, rtol=2e-5, atol=2e-6)  # float32 round-off after 20 steps
    # the 20 steps moved the parameters: the comparison is not one of untouched initial values
    moved = max(np.abs(a - np.asarray(b)).max() for a, b in zip(ref, res["init"]))
    assert moved > 1e-3
