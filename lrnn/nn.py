"""Neural networks as flax NNX modules, exposed to the physics code as pure functions.

The physics code never holds a stateful module: it receives ``(graphdef, state)`` from
:func:`split` and calls :func:`merge` inside the pure (jit-able) function, in the style of
jax-md and optax.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
}


def activation(name: str) -> Callable:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


class StackedMLP(nnx.Module):
    """``n_nets`` independent MLPs of identical shape with parameters stacked on axis 0.

    Layer l: ``h_{l+1} = act(h_l W_l[k] + b_l[k])``, with the DeePMD ResNet shortcut
    ``h_{l+1} += h_l`` when widths match and ``+= [h_l, h_l]`` when the width doubles.
    The last layer is linear when ``linear_output`` (fitting nets) and activated otherwise
    (embedding nets).
    """

    def __init__(self, n_nets: int, sizes: Sequence[int], *, act: str = "tanh", linear_output: bool = True,
                 resnet: bool = True, bias_std: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs):
        self.sizes = tuple(int(s) for s in sizes)
        self.act_name = act
        self.linear_output = linear_output
        self.resnet = resnet
        self.n_layers = len(self.sizes) - 1
        for l in range(self.n_layers):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            std = 1.0 / math.sqrt(fan_in + fan_out)
            w = std * jax.random.normal(rngs.params(), (n_nets, fan_in, fan_out), dtype)
            last = l == self.n_layers - 1
            b = (jnp.zeros((n_nets, fan_out), dtype) if (last and linear_output)
                 else bias_std * jax.random.normal(rngs.params(), (n_nets, fan_out), dtype))
            setattr(self, f"w{l}", nnx.Param(w))
            setattr(self, f"b{l}", nnx.Param(b))

    def __call__(self, k, x: jax.Array) -> jax.Array:
        """Apply net ``k`` (a static int) to ``x[..., sizes[0]]``; or, with ``k`` a slice of
        ``K`` nets, apply net ``k[n]`` to ``x[..., n, :, :]`` (x of shape (..., K, S, in))."""
        act = activation(self.act_name)
        h = x
        many = isinstance(k, slice)
        for l in range(self.n_layers):
            w, b = getattr(self, f"w{l}")[k], getattr(self, f"b{l}")[k]
            if many:
                z = jnp.einsum("...nsi,nio->...nso", h, w) + b[:, None, :]
            else:
                z = h @ w + b
            last = l == self.n_layers - 1
            if last and self.linear_output:
                return z
            y = act(z)
            if self.resnet and w.shape[-2] == w.shape[-1]:
                y = y + h
            elif self.resnet and w.shape[-1] == 2 * w.shape[-2]:
                y = y + jnp.concatenate([h, h], axis=-1)
            h = y
        return h


def split(module: nnx.Module):
    """``(graphdef, state)`` of a module: the state is a pytree of arrays."""
    return nnx.split(module)


def merge(graphdef, state) -> nnx.Module:
    return nnx.merge(graphdef, state)


def count_parameters(state) -> int:
    return int(sum(x.size for x in jax.tree.leaves(state)))
