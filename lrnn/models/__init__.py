"""Model registry: a model is a :class:`lrnn.models.base.LocalModel` (an NNX module with
``energy(inputs, stats) -> eV``); a new local model is one module plus one line in MODELS.

``inputs`` is a dict with ``positions`` (N, 3) Å, ``cell`` (3, 3) Å, ``layout``
(:class:`lrnn.neighbors.Layout`), ``types`` (N,) and ``total_charge`` (e); ``stats`` a dict of
normalisation arrays computed from training data.  Models are created from a plain config
dict (stored in checkpoints), so every model lrnn trains can be re-created by
:func:`create`.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lrnn.models.deeppot import DeepPotConfig, DeepPotSE
from lrnn.models.eann import EANN, EANNConfig
from lrnn.models.equivariant import Equivariant, EquivariantConfig

MODELS = {"deeppot_se": (DeepPotConfig, DeepPotSE), "mace": (EquivariantConfig, Equivariant),
          "eann": (EANNConfig, EANN)}


def model_config(config: dict):
    """Typed config object for a model config dict ``{"type": ..., **hyper-parameters}``."""
    config = dict(config)
    kind = config.pop("type", "deeppot_se")
    if kind not in MODELS:
        raise ValueError(f"unknown model type {kind!r}; known: {sorted(MODELS)}")
    cls, _ = MODELS[kind]
    fields = {f for f in cls.__dataclass_fields__}
    unknown = set(config) - fields
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for model {kind!r}; known: {sorted(fields)}")
    return kind, cls(**config)


def create(config: dict, seed: int = 0, dtype=jnp.float32):
    """Instantiate the model described by ``config`` with parameters from ``seed``."""
    kind, cfg = model_config(config)
    return MODELS[kind][1](cfg, rngs=nnx.Rngs(seed), dtype=dtype)
