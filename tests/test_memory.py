"""A request that cannot fit gets a clear error before it runs (lrnn.memory)."""

import jax
import numpy as np
import pytest

from lrnn import memory
from lrnn.potential import batched_efv, untrained_potential
from tests.conftest import TINY_MODEL


def cluster(n, seed=0):
    """n atoms (O, H, H, ...) on a jittered cubic grid, 1.5 Å apart."""
    side = int(np.ceil(n ** (1 / 3)))
    g = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * 1.5
    pos = g + np.random.default_rng(seed).normal(scale=0.05, size=g.shape)
    return pos, np.where(np.arange(n) % 3 == 0, 8, 1)


def test_too_large_a_request_names_the_size_and_the_memory():
    pot = untrained_potential([1, 8], dict(TINY_MODEL))
    pos, num = cluster(200)
    pot.memory_limit_bytes = 2**20  # 1 MiB
    with pytest.raises(memory.InsufficientMemory, match=r"for 200 atoms need \d+\.\d\d GiB, but only 0\.00 GiB"):
        pot.calculate(pos, num)
    pot.memory_limit_bytes = None  # what the machine has: it fits
    r = pot.calculate(pos, num)
    assert np.all(np.isfinite(r["forces"])) and r["forces"].shape == (200, 3)


def test_required_bytes_cover_the_arguments_and_grow_with_size():
    pot = untrained_potential([1, 8], dict(TINY_MODEL))
    need = []
    for n in (100, 400):
        pos, num = cluster(n)
        ds = pot._dataset(pos, num, None, None, None)
        inputs = jax.tree.map(jax.numpy.asarray, pot._inputs(ds, np.dtype("float32")))
        args = (pot.graphdef, pot.state, pot.stats, inputs, {})
        b = memory.required_bytes(batched_efv.lower(*args).compile())
        assert b >= sum(x.nbytes for x in jax.tree.leaves(args[1:]))  # the inputs alone, counted here
        need.append(b)
    assert need[1] > need[0]
    assert memory.available_bytes() > 2**20
