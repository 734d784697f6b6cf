"""lrnn: machine-learning interatomic potentials with physically correct long-range
interactions, in JAX."""

from __future__ import annotations

__version__ = "0.1.0"


def load(checkpoint, **kwargs):
    """Load a trained potential from a checkpoint directory (see :mod:`lrnn.potential`)."""
    from lrnn.potential import load as _load

    return _load(checkpoint, **kwargs)


__all__ = ["load", "__version__"]
