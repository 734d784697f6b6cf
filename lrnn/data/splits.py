"""Deterministic train/validation/test splits from a seed."""

from __future__ import annotations

import numpy as np


def split_indices(n: int, sizes, seed: int = 0) -> list[np.ndarray]:
    """Split ``range(n)`` into disjoint index sets of the given sizes, after a permutation
    drawn from ``numpy.random.default_rng(seed)``.  A size of ``-1`` takes the rest."""
    sizes = list(sizes)
    if sizes.count(-1) > 1:
        raise ValueError("at most one split size may be -1 (the rest)")
    fixed = sum(s for s in sizes if s != -1)
    if fixed > n:
        raise ValueError(f"requested split sizes {sizes} need {fixed} structures, only {n} available")
    sizes = [n - fixed if s == -1 else s for s in sizes]
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(np.sort(perm[start:start + s]))
        start += s
    return out


def train_val_test(dataset, n_train: int, n_val: int, n_test: int = -1, seed: int = 0):
    """Split a :class:`~lrnn.system.Dataset` into train/validation/test subsets."""
    idx = split_indices(len(dataset), [n_train, n_val, n_test], seed)
    return tuple(dataset.subset(i) for i in idx)
