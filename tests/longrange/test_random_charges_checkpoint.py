"""The committed latent-charge model (experiments/results/longrange/random_charges) loads
with lrnn.load and reproduces exact Coulomb + repulsion labels on new, larger systems."""

import importlib.util
from pathlib import Path

import numpy as np

import lrnn

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "experiments/results/longrange/random_charges/checkpoint"


def test_committed_checkpoint_on_new_systems():
    assert CKPT.exists(), f"the committed random-charges checkpoint is missing: {CKPT}"
    spec = importlib.util.spec_from_file_location("rc", ROOT / "experiments/longrange/random_charges.py")
    rc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rc)
    pot = lrnn.load(CKPT)
    rng = np.random.default_rng(12345)
    for n in (96, 128):
        pos = rc.place(n, rng)
        q = np.r_[np.ones(n // 2), -np.ones(n // 2)]
        e_ref, e_c, f_ref = rc.labels(pos, q)
        e, f = pot.energy_forces(pos, np.r_[np.full(n // 2, 11), np.full(n // 2, 17)])
        assert abs(e - e_ref) < 0.02 * abs(e_c), (n, e, e_ref, e_c)
        assert np.mean(np.abs(f - f_ref)) < 0.1  # eV/Å
