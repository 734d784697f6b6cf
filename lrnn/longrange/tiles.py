"""Row tiles for the exact O(N²) pair sums of the long-range terms.

The pair sums are evaluated ``block`` target rows at a time with :func:`jax.lax.map`,
each tile under :func:`jax.checkpoint`, so the (block, N) pair arrays stay in cache and
memory is O(block · N) for the value and its gradients (measured 1.5-2x faster than one
(N, N) array at N = 3000 on 2 CPU cores; ``experiments/longrange/bench_terms.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Default rows per tile.
ROW_BLOCK = 128


def map_rows(fn, *row_arrays, block: int = ROW_BLOCK, consts: tuple = ()):
    """``fn(idx, *rows, *consts) -> (b, ...)`` applied to tiles of ``block`` rows; returns
    (N, ...).

    ``idx`` (b,) holds the row indices, -1 on the padding rows of the last tile (whose
    row arrays are zero); ``fn`` must give finite values there (they are dropped).
    Arrays ``fn`` needs besides its rows come in ``consts``.  The tiles are checkpointed
    with ``prevent_cse=False`` (CSE cannot cross the ``lax.map`` loop anyway): with the
    default, jax 0.10 segfaults differentiating such a map under ``jit`` when the inputs
    are concrete constants (measured here)."""
    n = row_arrays[0].shape[0]
    b = max(1, min(int(block), n))
    nb = -(-n // b)
    pad = nb * b - n
    idx = jnp.concatenate([jnp.arange(n), jnp.full((pad,), -1)]).reshape(nb, b)
    tiles = [jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]).reshape((nb, b) + a.shape[1:])
             for a in row_arrays]
    tile_fn = jax.checkpoint(lambda tile, c: fn(*tile, *c), prevent_cse=False)  # safe inside lax.map
    consts = tuple(jnp.asarray(c) for c in consts)
    out = jax.lax.map(lambda tile: tile_fn(tile, consts), (idx, *tiles))
    return out.reshape((nb * b,) + out.shape[2:])[:n]
