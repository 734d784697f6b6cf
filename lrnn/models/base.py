r"""What every local model shares: its config fields, and the composition of its atomic
energies with the far-field descriptor and the long-range terms.

.. math::

    E = \sum_i \mathcal F_{t_i}(D_i) + \sum_k E^{LR}_k(\{D_i\})

A local model (DeepPot-SE, the MACE-like equivariant model, EANN) subclasses
:class:`LocalModel` and provides ``descriptors(inputs, stats)`` (``inputs`` a
:class:`~lrnn.inputs.ModelInputs`, ``stats`` the descriptor statistics): per centre species
``a``, the descriptor rows ``D`` (C_a, width) with the centre mask (C_a,), or None for a species with no
centre slots.  It also creates the fitting nets ``fitting`` and calls :meth:`LocalModel.add_terms`
with the descriptor width.  Everything else (atomic energies with the optional input
standardisation, the long-range terms of :mod:`lrnn.models.terms`, latent charges, the
per-term breakdown) lives here once.  A new long-range term is one module in
:mod:`lrnn.models.terms` plus one line in its ``TERMS`` registry; a new local model is one
module here plus one line in :data:`lrnn.models.MODELS`.

The far-field descriptor (:mod:`lrnn.longrange.farfield`): per atom and species,
:math:`r_{off}\,\phi_{i,t} = r_{off}\sum_{j\in t,\,j\ne i} (1 - f_c(r_{ij}))/r_{ij}`, with the
C² switch :math:`f_c` (1 below ``r_on``, 0 beyond ``r_off``), appended to :math:`D_i` by the
models that use it.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from lrnn.fmm import MAX_ORDER, MIN_ORDER
from lrnn.longrange.farfield import far_field_potentials, far_field_potentials_fmm
from lrnn.models.terms import create_term, term_config


@dataclasses.dataclass(frozen=True)
class LocalConfig:
    """Hyper-parameters every local model has (lengths in Å)."""

    type_map: tuple  # atomic numbers, one type each
    rcut: float = 6.0
    rcut_smth: float = 0.5  # the statistics' smooth switch (and the far field's default r_on)
    activation: str = "tanh"
    neighbor_mode: str = "auto"  # "all" pairs of free molecules, "cutoff" lists, or "auto"
    long_range: tuple = ()  # long-range terms (lrnn.models.terms), e.g. [{type: latent_coulomb}]
    far_field: tuple = ()  # (r_on, r_off) in Å: append the smooth far-field descriptor to D
    fit_norm: bool = False  # standardise the fitting input with initial-descriptor statistics (d_avg, d_std)
    far_field_method: str = "direct"  # "direct" (exact O(N²)) or "fmm" (O(N) when a plan is given)
    fmm_order: int = 10  # expansion order of the FMM plans built for "fmm" parts
    fmm_min_atoms: int = 5000  # below this many atoms the exact sums are used (crossover: bench_terms.md)

    def __post_init__(self):
        object.__setattr__(self, "long_range", tuple(term_config(t) for t in self.long_range))
        self.hierarchical_sog_term()  # at most one
        ff = self.far_field
        if isinstance(ff, dict):
            bad = set(ff) - {"r_on", "r_off", "method"}
            if bad:
                raise ValueError(f"far_field: unknown option(s) {sorted(bad)}; known: method, r_off, r_on")
            object.__setattr__(self, "far_field_method", ff.get("method", self.far_field_method))
            ff = (ff.get("r_on", self.rcut_smth), ff.get("r_off", self.rcut))
        object.__setattr__(self, "far_field", tuple(float(x) for x in ff))
        if self.far_field and not (len(self.far_field) == 2 and 0 < self.far_field[0] < self.far_field[1]):
            raise ValueError(f"far_field needs 0 < r_on < r_off (Å), got {self.far_field}")
        if self.far_field_method not in ("direct", "fmm"):
            raise ValueError(f"far_field method must be 'direct' or 'fmm', got {self.far_field_method!r}")
        if not MIN_ORDER <= int(self.fmm_order) <= MAX_ORDER:
            raise ValueError(f"fmm_order must be in [{MIN_ORDER}, {MAX_ORDER}], got {self.fmm_order}")
        object.__setattr__(self, "type_map", tuple(int(z) for z in self.type_map))
        if not self.type_map:
            raise ValueError("type_map is empty: the model needs at least one species")
        if len(set(self.type_map)) != len(self.type_map):
            raise ValueError(f"type_map has duplicates: {self.type_map}")
        if not (0 < self.rcut_smth < self.rcut):
            raise ValueError(f"need 0 < rcut_smth < rcut, got rcut_smth={self.rcut_smth} Å, rcut={self.rcut} Å")
        if self.rcut > 30:
            raise ValueError(f"rcut={self.rcut} Å is not a local cutoff; use a long-range term instead")
        if self.neighbor_mode not in ("auto", "all", "cutoff"):
            raise ValueError(f"neighbor_mode must be auto|all|cutoff, got {self.neighbor_mode!r}")

    @property
    def n_types(self) -> int:
        return len(self.type_map)

    def fmm_leaf_side(self) -> float | None:
        """Smallest FMM leaf side (Å) the model's FMM parts need, or None if it has none:
        ``r_off`` for the far-field descriptor, 8σ for latent Coulomb (see their modules)."""
        need = [self.far_field[1]] if self.far_field and self.far_field_method == "fmm" else []
        need += [t.fmm_leaf_side for t in self.long_range if getattr(t, "method", "") == "fmm"]
        return max(need) if need else None

    def p3m_spacing(self) -> float | None:
        """The finest P3M mesh spacing (Å) of the model's ``p3m`` terms, or None."""
        need = [t.p3m_spacing for t in self.long_range if getattr(t, "method", "") == "p3m"]
        return min(need) if need else None

    @property
    def has_charge_terms(self) -> bool:
        """Whether the energy depends on the total charge: a long-range term over latent
        charges equilibrated to it (``latent_coulomb``, ``sog``)."""
        return any(getattr(t, "uses_total_charge", False) for t in self.long_range)

    def hierarchical_sog_term(self) -> int | None:
        """Index of the SOG term with ``method: hierarchical`` (at most one), or None."""
        idx = [k for k, t in enumerate(self.long_range) if t.type == "sog" and t.method == "hierarchical"]
        if len(idx) > 1:
            raise ValueError("at most one sog term may use method: hierarchical (one plan per structure)")
        return idx[0] if idx else None


class LocalModel(nnx.Module):
    """Atomic energies of a local model plus its long-range terms (module docstring).
    Subclasses set ``config``, ``fitting`` (a per-species :class:`lrnn.nn.StackedMLP`) and
    implement ``descriptors``."""

    config: LocalConfig

    def descriptors(self, inputs, stats):  # pragma: no cover - the subclass's job
        raise NotImplementedError

    def add_terms(self, d_desc: int, rngs, dtype):
        """The long-range terms of the config (``term0``, …), on descriptors of width ``d_desc``."""
        self.n_terms = len(self.config.long_range)
        for k, tcfg in enumerate(self.config.long_range):
            setattr(self, f"term{k}", create_term(tcfg, self.config.n_types, d_desc, rngs, dtype))

    def far_field_features(self, inputs):
        """Far-field descriptor features (N, n_types) scaled by r_off (FMM with a plan in
        ``inputs``, else the exact sum)."""
        cfg = self.config
        pos = inputs.positions
        plan = inputs.fmm_plan if cfg.far_field_method == "fmm" else None
        if plan is not None:
            ff = far_field_potentials_fmm(plan, pos, inputs.types, cfg.n_types, *cfg.far_field)
        else:
            ff = far_field_potentials(pos, inputs.types, cfg.n_types, *cfg.far_field)
        return ff * cfg.far_field[1]

    def atomic_energies(self, inputs, stats, desc=None):
        """Per centre species: atomic energies (C_a,) in eV, zero for padding slots."""
        res = []
        desc = self.descriptors(inputs, stats) if desc is None else desc
        for a, item in enumerate(desc):
            if item is None:
                res.append(None)
                continue
            dmat, mask = item
            if self.config.fit_norm:
                if "d_avg" not in stats:
                    raise ValueError("fit_norm: the statistics have no d_avg/d_std; compute them with "
                                     "lrnn.models.deeppot.fit_input_stats (the trainer does)")
                dmat = (dmat - stats["d_avg"][a].astype(dmat.dtype)) / stats["d_std"][a].astype(dmat.dtype)
            e = self.fitting(a, dmat)[:, 0]
            res.append(jnp.where(mask, e, 0.0))
        return res

    @property
    def terms(self):
        return [getattr(self, f"term{k}") for k in range(self.n_terms)]

    def energy(self, inputs, stats):
        """Total energy (eV) without the per-element shifts: short range plus the
        long-range terms of the config."""
        desc = self.descriptors(inputs, stats)
        return self._energy(inputs, stats, desc)

    def _energy(self, inputs, stats, desc):
        e = sum(jnp.sum(x) for x in self.atomic_energies(inputs, stats, desc) if x is not None)
        for term in self.terms:
            e = e + term.energy(inputs, stats, desc)
        return e

    def charges(self, inputs, stats):
        """Latent atomic charges (N,) in e of the first latent-charge term (latent_coulomb or
        sog): the quantity a reference-charge loss compares with (``train.pref_q``)."""
        return self._charges(inputs, self.descriptors(inputs, stats))

    def _charges(self, inputs, desc):
        for term in self.terms:
            if hasattr(term, "charges"):
                return term.charges(inputs, desc)
        raise ValueError("the model has no latent-charge term (latent_coulomb or sog): it predicts no charges")

    def energy_and_charges(self, inputs, stats):
        """(energy eV, latent charges (N,) e) from one descriptor evaluation."""
        desc = self.descriptors(inputs, stats)
        return self._energy(inputs, stats, desc), self._charges(inputs, desc)

    def energy_terms(self, inputs, stats):
        """Dict of energy contributions (eV): ``short`` and one entry per long-range term."""
        desc = self.descriptors(inputs, stats)
        out = {"short": sum(jnp.sum(x) for x in self.atomic_energies(inputs, stats, desc) if x is not None)}
        for k, term in enumerate(self.terms):
            out[f"{k}:{term.cfg.type}"] = term.energy(inputs, stats, desc)
        return out
