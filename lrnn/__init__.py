"""lrnn: machine-learning interatomic potentials with physically correct long-range
interactions, in JAX."""

from __future__ import annotations

from lrnn.potential import Potential, load

__version__ = "0.1.0"

__all__ = ["Potential", "load", "__version__"]
