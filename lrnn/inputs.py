"""What a model reads for one structure (or, with a leading axis, a batch): a frozen pytree.

:func:`lrnn.batch.make_inputs` builds it for a :class:`~lrnn.system.Dataset`;
:func:`lrnn.bundle.network_energy` from a :class:`~lrnn.bundle.System`, its neighbour
:class:`~lrnn.neighbors.Layout` and its :class:`~lrnn.plans.Plans`.  Local models and
long-range terms read its fields by name, so a misspelt field fails at trace time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from lrnn.neighbors import Layout

#: the optional plan fields of :class:`ModelInputs`
PLAN_FIELDS = ("fmm_plan", "sog_plan", "p3m_mesh")


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """``positions`` (N, 3) Å; ``types`` (N,) int32, the index of each atom's element in
    the model's ``type_map`` (−1 on padding); ``cell`` (3, 3) Å (rows are cell vectors;
    zeros for open systems); ``total_charge`` () e; ``layout`` the species-blocked
    neighbour layout.  Optional plans of the O(N) long-range methods: ``fmm_plan``
    (:class:`~lrnn.fmm.tree.FMMPlan`), ``sog_plan`` (:class:`~lrnn.longrange.sog.SOGPlan`),
    ``p3m_mesh`` (:class:`~lrnn.plans.MeshPlan`); None means exact sums."""

    positions: jax.Array
    types: jax.Array
    cell: jax.Array
    total_charge: jax.Array
    layout: Layout
    fmm_plan: Any = None
    sog_plan: Any = None
    p3m_mesh: Any = None

    def with_plans(self, plans: dict | None) -> ModelInputs:
        """These inputs with the plans of ``plans`` (a dict as :meth:`lrnn.plans.Plans.inputs`
        returns, or None for none)."""
        unknown = set(plans or {}) - set(PLAN_FIELDS)
        if unknown:
            raise ValueError(f"unknown plans {sorted(unknown)}; known: {', '.join(PLAN_FIELDS)}")
        return dataclasses.replace(self, **(plans or {}))

    @property
    def plans(self) -> dict:
        """The plans in use, as a dict (``fmm_plan``, ``sog_plan``, ``p3m_mesh``)."""
        return {k: getattr(self, k) for k in PLAN_FIELDS if getattr(self, k) is not None}


jax.tree_util.register_dataclass(
    ModelInputs, data_fields=["positions", "types", "cell", "total_charge", "layout", *PLAN_FIELDS], meta_fields=[])
