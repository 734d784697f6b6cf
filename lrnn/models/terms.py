"""Long-range energy terms composed with the DeepPot-SE short-range model.

A term is selected in the model config under ``long_range`` (a list), e.g.::

    model:
      type: deeppot_se
      rcut: 5.0
      long_range:
        - {type: latent_coulomb, sigma: 1.0, fit: [32, 32]}

and receives the per-species descriptors of the short-range model, so descriptors are
computed once.  Every term is an NNX module with ``energy(inputs, stats, desc) -> eV``;
forces and virials follow from ``jax.grad`` of the total energy.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from lrnn.longrange.coulomb import coulomb_direct, equilibrate
from lrnn.nn import StackedMLP


@dataclasses.dataclass(frozen=True)
class LatentCoulombConfig:
    r"""Latent charges with charge equilibration and a Gaussian-smeared Coulomb energy.

    A per-species net maps the local descriptor :math:`D_i` to a raw charge
    :math:`\tilde q_i`; the charges are equilibrated to the system's total charge Q
    (:func:`lrnn.longrange.coulomb.equilibrate`) and interact through
    :math:`k\,\mathrm{erf}(r/2\sigma)/r` (:mod:`lrnn.longrange.coulomb`).  ``sigma`` in Å;
    ``method``: ``direct`` (exact O(N²) sum, free space)."""

    type: str = "latent_coulomb"
    fit: tuple = (32, 32)
    sigma: float = 1.0
    method: str = "direct"

    def __post_init__(self):
        object.__setattr__(self, "fit", tuple(int(x) for x in self.fit))
        if self.sigma < 0:
            raise ValueError(f"latent_coulomb: sigma must be >= 0 Å, got {self.sigma}")
        if self.method not in ("direct",):
            raise ValueError(f"latent_coulomb: unknown method {self.method!r}; available: direct")

    periodic_ok = False


class LatentCoulomb(nnx.Module):
    def __init__(self, cfg: LatentCoulombConfig, n_types: int, d_in: int, *, rngs: nnx.Rngs, dtype):
        self.cfg = cfg
        self.net = StackedMLP(n_types, (d_in,) + cfg.fit + (1,), act="tanh", linear_output=True, dtype=dtype,
                              rngs=rngs)

    def charges(self, inputs, desc):
        """Equilibrated charges (N,) in e, zero on padding."""
        pos = inputs["positions"]
        n = pos.shape[0]
        q = jnp.zeros(n, pos.dtype)
        lay = inputs["layout"]
        for a, item in enumerate(desc):
            if item is None:
                continue
            dmat, m = item
            qa = jnp.where(m, self.net(a, dmat)[:, 0], 0.0)
            q = q.at[lay.centres[a]].add(qa, mode="drop")
        mask = inputs["types"] >= 0
        return equilibrate(q, mask, inputs["total_charge"].astype(pos.dtype))

    def energy(self, inputs, stats, desc):
        q = self.charges(inputs, desc)
        return coulomb_direct(inputs["positions"], q, inputs["types"] >= 0, sigma=self.cfg.sigma)


TERMS = {"latent_coulomb": (LatentCoulombConfig, LatentCoulomb)}


def term_config(d) -> object:
    if dataclasses.is_dataclass(d):
        return d
    d = dict(d)
    kind = d.get("type")
    if kind not in TERMS:
        raise ValueError(f"unknown long-range term {kind!r}; known: {sorted(TERMS)}")
    cls = TERMS[kind][0]
    fields = {f.name for f in dataclasses.fields(cls)}
    bad = set(d) - fields
    if bad:
        raise ValueError(f"unknown option(s) {sorted(bad)} for long-range term {kind!r}; known: {sorted(fields)}")
    return cls(**d)


def create_term(cfg, n_types, d_in, rngs, dtype):
    return TERMS[cfg.type][1](cfg, n_types, d_in, rngs=rngs, dtype=dtype)
