"""Long-range energy terms composed with the DeepPot-SE short-range model.

A term is selected in the model config under ``long_range`` (a list), e.g.::

    model:
      type: deeppot_se
      rcut: 5.0
      long_range:
        - {type: latent_coulomb, sigma: 1.0, fit: [32, 32]}

and receives the per-species descriptors of the short-range model, so descriptors are
computed once.  Every term is an NNX module with ``energy(inputs, stats, desc) -> eV``
(``inputs`` a :class:`~lrnn.inputs.ModelInputs`);
forces and virials follow from ``jax.grad`` of the total energy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lrnn.longrange.coulomb import (
    FMM_LEAF_SIGMAS,
    coulomb_direct,
    coulomb_fmm,
    coulomb_reciprocal,
    equilibrate,
)
from lrnn.longrange.dispersion import POWERS, dispersion_energy
from lrnn.longrange.pme import coulomb_p3m
from lrnn.longrange.sog import sog_hierarchical, sog_open, sog_periodic
from lrnn.nn import StackedMLP


def per_atom(net, inputs, desc, width: int = 1):
    """Apply a per-species net to the descriptors and scatter to atom order: (N, width)."""
    pos = inputs.positions
    out = jnp.zeros((pos.shape[0], width), pos.dtype)
    for a, item in enumerate(desc):
        if item is None:
            continue
        dmat, m = item
        out = out.at[inputs.layout.centres[a]].add(jnp.where(m[:, None], net(a, dmat), 0.0), mode="drop")
    return out


def latent_charges(net, inputs, desc):
    """Equilibrated latent charges (N,) in e, zero on padding."""
    q = per_atom(net, inputs, desc)[:, 0]
    return equilibrate(q, inputs.types >= 0, inputs.total_charge.astype(q.dtype))


def _k_index_max(term: str, value):
    """``k_index_max`` as an int, or a tuple of three ints (one per cell vector)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 3 or any(int(v) != v or v < 0 for v in value):
            raise ValueError(f"{term}: k_index_max must be an int or three ints >= 0 (one per cell vector), "
                             f"got {value}")
        return tuple(int(v) for v in value)
    if int(value) != value or value < 0:
        raise ValueError(f"{term}: k_index_max must be an int >= 0, got {value}")
    return int(value)


class _OpenOrReciprocal:
    """Terms evaluated in free space (``direct``) or, for periodic cells, in reciprocal space."""

    @property
    def periodic_ok(self):
        return self.method in ("reciprocal", "p3m")

    @property
    def needs_cell(self):
        return self.method in ("reciprocal", "p3m")


class _LatentChargeTerm(nnx.Module):
    """A term over latent charges from a per-species net on the descriptors."""

    def __init__(self, cfg, n_types: int, d_in: int, *, rngs: nnx.Rngs, dtype):
        self.cfg = cfg
        self.net = StackedMLP(n_types, (d_in,) + cfg.fit + (1,), act="tanh", linear_output=True, dtype=dtype,
                              rngs=rngs)

    def charges(self, inputs, desc):
        """Equilibrated charges (N,) in e, zero on padding."""
        return latent_charges(self.net, inputs, desc)


@dataclasses.dataclass(frozen=True)
class LatentCoulombConfig(_OpenOrReciprocal):
    r"""Latent charges with charge equilibration and a Gaussian-smeared Coulomb energy.

    A per-species net maps the local descriptor :math:`D_i` to a raw charge
    :math:`\tilde q_i`; the charges are equilibrated to the system's total charge Q
    (:func:`lrnn.longrange.coulomb.equilibrate`) and interact through
    :math:`k\,\mathrm{erf}(r/2\sigma)/r` (:mod:`lrnn.longrange.coulomb`).  ``sigma`` in Å;
    ``method``: ``direct`` (exact O(N²) sum, free space), ``fmm`` (free space, O(N) by
    :func:`lrnn.longrange.coulomb.coulomb_fmm` when the caller passes an FMM plan, as
    :class:`lrnn.potential.Potential` does from ``fmm_min_atoms`` atoms on; the exact sum
    otherwise, e.g. in training batches), ``reciprocal`` (periodic cells: Ewald-type
    k-space sum with integer k-indices up to ``k_index_max``, one int or one per cell vector,
    O(N K³)) or ``p3m`` (periodic
    cells: the same energy by P3M on a mesh of ``mesh_spacing`` Å, default σ/2,
    :func:`lrnn.longrange.pme.coulomb_p3m`, when the caller passes a mesh plan, as
    :class:`~lrnn.potential.Potential` and :mod:`lrnn.md` do from ``fmm_min_atoms`` atoms
    on; the ``reciprocal`` sum otherwise, e.g. in training batches)."""

    uses_total_charge = True  # latent charges are equilibrated to the total charge (a class attribute)
    type: str = "latent_coulomb"
    fit: tuple = (32, 32)
    sigma: float = 1.0
    method: str = "direct"
    k_index_max: int | tuple = 8
    mesh_spacing: float = 0.0  # Å, P3M mesh (0: sigma / 2)

    def __post_init__(self):
        object.__setattr__(self, "fit", tuple(int(x) for x in self.fit))
        object.__setattr__(self, "k_index_max", _k_index_max(self.type, self.k_index_max))
        if self.sigma < 0 or (self.needs_cell and self.sigma <= 0):
            raise ValueError(f"latent_coulomb: sigma must be >= 0 Å (> 0 for {self.method}), got {self.sigma}")
        if self.method not in ("direct", "fmm", "reciprocal", "p3m"):
            raise ValueError(f"latent_coulomb: unknown method {self.method!r}; available: direct, fmm, reciprocal, "
                             "p3m")
        if self.mesh_spacing < 0:
            raise ValueError(f"latent_coulomb: mesh_spacing must be >= 0 Å, got {self.mesh_spacing}")
        if self.method == "fmm" and self.sigma <= 0:
            raise ValueError("latent_coulomb: method fmm needs sigma > 0 Å (the near-field kernel)")

    @property
    def fmm_leaf_side(self) -> float:
        return FMM_LEAF_SIGMAS * self.sigma

    @property
    def p3m_spacing(self) -> float:
        """The P3M mesh spacing (Å)."""
        return self.mesh_spacing or self.sigma / 2.0


class LatentCoulomb(_LatentChargeTerm):
    def energy(self, inputs, stats, desc):
        q = self.charges(inputs, desc)
        mask = inputs.types >= 0
        if self.cfg.method == "p3m" and inputs.p3m_mesh is not None:
            return coulomb_p3m(inputs.positions, q, mask, inputs.cell, self.cfg.sigma,
                               inputs.p3m_mesh.shape)
        if self.cfg.method in ("reciprocal", "p3m"):
            return coulomb_reciprocal(inputs.positions, q, mask, inputs.cell, self.cfg.sigma,
                                      self.cfg.k_index_max)
        if self.cfg.method == "fmm" and inputs.fmm_plan is not None:
            return coulomb_fmm(inputs.fmm_plan, inputs.positions, q, mask, sigma=self.cfg.sigma)
        return coulomb_direct(inputs.positions, q, mask, sigma=self.cfg.sigma)


@dataclasses.dataclass(frozen=True)
class SOGConfig(_OpenOrReciprocal):
    """Sum-of-Gaussians kernel over latent charges (:mod:`lrnn.longrange.sog`).

    ``n_gaussians`` widths initialised log-spaced between ``s_min`` and ``s_max`` (Å) and
    learned with the weights; ``method``: ``direct`` (open, exact pair sum),
    ``hierarchical`` (open, O(N) by :func:`lrnn.longrange.sog.sog_hierarchical` when the
    caller passes a plan, as :class:`lrnn.potential.Potential` does from ``fmm_min_atoms``
    atoms on; the exact sum otherwise, e.g. in training batches) or ``reciprocal``
    (periodic, integer k-indices up to ``k_index_max``, one int or one per cell vector)."""

    uses_total_charge = True  # latent charges are equilibrated to the total charge (a class attribute)
    type: str = "sog"
    fit: tuple = (32, 32)
    n_gaussians: int = 8
    s_min: float = 1.0
    s_max: float = 12.0
    method: str = "direct"
    k_index_max: int | tuple = 6

    def __post_init__(self):
        object.__setattr__(self, "fit", tuple(int(x) for x in self.fit))
        object.__setattr__(self, "k_index_max", _k_index_max(self.type, self.k_index_max))
        if not (0 < self.s_min <= self.s_max):
            raise ValueError(f"sog: need 0 < s_min <= s_max (Å), got {self.s_min}, {self.s_max}")
        if self.n_gaussians < 1:
            raise ValueError("sog: n_gaussians must be >= 1")
        if self.method not in ("direct", "hierarchical", "reciprocal"):
            raise ValueError(f"sog: unknown method {self.method!r}; available: direct, hierarchical, reciprocal")


class SOG(_LatentChargeTerm):
    def __init__(self, cfg: SOGConfig, n_types: int, d_in: int, *, rngs: nnx.Rngs, dtype):
        super().__init__(cfg, n_types, d_in, rngs=rngs, dtype=dtype)
        self.log_width = nnx.Param(jnp.linspace(jnp.log(cfg.s_min), jnp.log(cfg.s_max), cfg.n_gaussians,
                                                dtype=dtype))
        self.weight = nnx.Param(jnp.full((cfg.n_gaussians,), 0.1, dtype))

    def energy(self, inputs, stats, desc):
        q = self.charges(inputs, desc)
        mask = inputs.types >= 0
        widths = jnp.exp(self.log_width[...])
        if self.cfg.method == "reciprocal":
            return sog_periodic(inputs.positions, q, mask, inputs.cell, self.weight[...], widths,
                                self.cfg.k_index_max)
        if self.cfg.method == "hierarchical" and inputs.sog_plan is not None:
            return sog_hierarchical(inputs.sog_plan, inputs.positions, q, mask, self.weight[...], widths)
        return sog_open(inputs.positions, q, mask, self.weight[...], widths)


@dataclasses.dataclass(frozen=True)
class DispersionConfig:
    """Neural dispersion with environment-dependent C6, C8, C10 (:mod:`lrnn.longrange.dispersion`).
    Lengths in Å: damping radius ``r0``, smooth cutoff from ``r_on`` to ``r_off``."""

    type: str = "dispersion"
    fit: tuple = (16,)
    r0: float = 3.0
    r_on: float = 12.0
    r_off: float = 15.0

    def __post_init__(self):
        object.__setattr__(self, "fit", tuple(int(x) for x in self.fit))
        if not (0 < self.r_on < self.r_off):
            raise ValueError(f"dispersion: need 0 < r_on < r_off (Å), got {self.r_on}, {self.r_off}")
        if self.r0 <= 0:
            raise ValueError("dispersion: r0 must be > 0 Å")

    periodic_ok = False
    uses_total_charge = False


class Dispersion(nnx.Module):
    def __init__(self, cfg: DispersionConfig, n_types: int, d_in: int, *, rngs: nnx.Rngs, dtype):
        self.cfg = cfg
        self.net = StackedMLP(n_types, (d_in,) + cfg.fit + (len(POWERS),), act="tanh", linear_output=True,
                              dtype=dtype, rngs=rngs)

    def coefficients(self, inputs, desc):
        """Atomic C_6, C_8, C_10 (N, 3) in eV·Å^m (softplus of the net, scaled by r0^m)."""
        raw = per_atom(self.net, inputs, desc, len(POWERS))
        scale = jnp.asarray([self.cfg.r0 ** m for m in POWERS], raw.dtype) * 0.01
        return jax.nn.softplus(raw) * scale

    def energy(self, inputs, stats, desc):
        c = self.coefficients(inputs, desc)
        return dispersion_energy(inputs.positions, c, inputs.types >= 0, self.cfg.r0, self.cfg.r_on,
                                 self.cfg.r_off)


TERMS = {"latent_coulomb": (LatentCoulombConfig, LatentCoulomb), "sog": (SOGConfig, SOG),
         "dispersion": (DispersionConfig, Dispersion)}


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
