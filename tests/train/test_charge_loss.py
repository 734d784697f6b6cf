"""Reference atomic charges in the loss (``train.pref_q``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn import models
from lrnn.batch import make_inputs, make_labels
from lrnn.nn import split
from lrnn.system import Dataset
from lrnn.train import load_config, train
from lrnn.train.trainer import charge_loss

MODEL = {"type": "deeppot_se", "type_map": [1, 8], "rcut": 4.0, "rcut_smth": 1.0, "embed": [4, 8],
         "axis_neurons": 2, "fit": [8], "long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [8]}]}
STATS = {"s_avg": jnp.zeros(2), "s_std": jnp.ones(2) * 0.3, "dir_std": jnp.ones(2) * 0.3, "n_norm": 5.0}


def waters(m=12, seed=0):
    """m random water dimers (6 atoms; the last structure padded to 7) with charges
    q_O = -0.8 e and q_H = +0.4 e and a Coulomb-like energy."""
    rng = np.random.default_rng(seed)
    pos = np.zeros((m, 7, 3))
    num = np.zeros((m, 7), int)
    for k in range(m):
        for w, o in enumerate((np.zeros(3), rng.uniform(3.0, 4.0, 3))):
            u = rng.normal(size=(2, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            pos[k, 3 * w:3 * w + 3] = [o, o + 0.96 * u[0], o + 0.96 * u[1]]
            num[k, 3 * w:3 * w + 3] = [8, 1, 1]
    q = np.where(num == 8, -0.8, np.where(num == 1, 0.4, 0.0))
    e = rng.normal(size=m)
    return Dataset(pos, num, e, forces=np.zeros((m, 7, 3)), charges=q)


def test_charge_loss_is_the_masked_mean_square_error():
    ds = waters(4)
    _, mcfg = models.model_config(MODEL)
    module = models.create(MODEL, seed=1, dtype=jnp.float64)
    g, st = split(module)
    inputs, _ = make_inputs(ds, mcfg, dtype=np.float64)
    labels = make_labels(ds, np.zeros(2), mcfg.type_map, dtype=np.float64)
    labels["has_charges"][1] = False  # a structure without reference charges is left out
    inputs, labels = jax.tree.map(jnp.asarray, (inputs, labels))
    got = float(charge_loss(g, st, STATS, inputs, labels))
    q = np.stack([np.asarray(module.charges(jax.tree.map(lambda x: x[k], inputs), STATS)) for k in range(4)])
    m = ds.mask.copy()
    m[1] = False
    ref = np.sum(np.where(m, (q - ds.charges) ** 2, 0.0)) / m.sum()
    assert got == pytest.approx(ref, rel=1e-10)
    assert np.all(q[~ds.mask] == 0)  # padding carries no charge


def test_training_with_reference_charges_learns_them(tmp_path):
    ds = waters(12)
    maes = {}
    for pref_q in (0.0, 10.0):
        cfg = load_config({"data": {"train": "in-memory"}, "model": MODEL,
                           "train": {"max_steps": 150, "decay_steps": 50, "batch_size": 4, "lr_start": 1e-2,
                                     "lr_stop": 1e-3, "pref_e_start": 0.0, "pref_e_limit": 0.0,
                                     "pref_f_start": 0.0, "pref_f_limit": 0.0, "pref_q": pref_q,
                                     "progress": False, "dtype": "float64"},
                           "output": str(tmp_path / f"q{pref_q}")})
        train(cfg, quiet=True, datasets={"train": ds.subset(np.arange(10)), "val": ds.subset([10, 11])})
        from lrnn.potential import load

        pot = load(tmp_path / f"q{pref_q}" / "last")  # "checkpoint" is the best by energy
        from lrnn.nn import merge

        module = merge(pot.graphdef, pot.state)
        _, mcfg = models.model_config(pot.model_config)
        inputs, _ = make_inputs(ds, mcfg, dtype=np.float64)
        q = np.stack([np.asarray(module.charges(jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), inputs),
                                                pot.stats)) for k in range(len(ds))])
        maes[pref_q] = float(np.abs(q - ds.charges)[ds.mask].mean())
    assert maes[10.0] < 0.05 < maes[0.0]


def test_charge_loss_configuration_errors(tmp_path):
    ds = waters(4)
    base = {"data": {"train": "in-memory"}, "train": {"max_steps": 2, "pref_q": 1.0, "progress": False},
            "output": str(tmp_path / "x")}
    local = {k: v for k, v in MODEL.items() if k != "long_range"}
    with pytest.raises(ValueError, match="needs a latent-charge term"):
        train(load_config(dict(base, model=local)), quiet=True, datasets={"train": ds, "val": ds})
    ds.charges = None
    with pytest.raises(ValueError, match="no reference atomic charges"):
        train(load_config(dict(base, model=MODEL)), quiet=True, datasets={"train": ds, "val": ds})
