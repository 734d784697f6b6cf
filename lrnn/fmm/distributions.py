"""Test and benchmark particle sets (NumPy)."""

from __future__ import annotations

import numpy as np

__all__ = ["uniform_cube", "plummer", "random_charges"]


def uniform_cube(n: int, seed: int = 0, side: float = 1.0) -> np.ndarray:
    """``n`` points uniform in ``[0, side]^3``."""
    return np.random.default_rng(seed).uniform(0.0, side, (n, 3))


def plummer(n: int, seed: int = 0, a: float = 1.0, r_max: float = 20.0) -> np.ndarray:
    """``n`` points from a Plummer sphere of scale radius ``a`` (density ∝ (1+r²/a²)^-5/2),
    truncated at ``r_max·a``; strongly clustered (half the mass within 1.3 a)."""
    rng = np.random.default_rng(seed)
    m_max = (r_max**2 / (1 + r_max**2)) ** 1.5  # enclosed mass fraction at r_max
    u = rng.uniform(0.0, m_max, n)
    r = a / np.sqrt(u ** (-2.0 / 3.0) - 1.0)
    v = rng.normal(size=(n, 3))
    return r[:, None] * v / np.linalg.norm(v, axis=1, keepdims=True)


def random_charges(n: int, seed: int = 0, neutral: bool = True) -> np.ndarray:
    """Charges uniform in [-1, 1] (shifted to sum to zero if ``neutral``)."""
    q = np.random.default_rng(seed + 12345).uniform(-1.0, 1.0, n)
    return q - q.mean() if neutral else q
