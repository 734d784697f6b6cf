"""Plans of a model's O(N) long-range parts, shaped like jax-md's neighbour list.

The FMM parts of a model (far-field descriptor or latent Coulomb with ``method: fmm``) and
its hierarchical SOG term evaluate in O(N) through static layouts built on the host from
concrete positions: an octree with its interaction lists (:func:`lrnn.fmm.plan`) and a
pair list plus grids (:func:`lrnn.longrange.sog.sog_plan`).  :class:`Plans` holds both and
is used like a jax-md neighbour list::

    plans = allocate(config, positions, sog_widths=w)   # host (NumPy), outside jit
    plans = update(plans, positions)                    # jittable, O(N)
    if plans.did_overflow:                              # a layout no longer holds
        plans = allocate(config, positions, sog_widths=w)

Validity (what ``update`` checks):

* **FMM**: every atom lies inside its planned box widened by ``FMM_SKIN`` of the box side,
  :math:`|x_{i,a} - c_a| \\le \\tfrac12 h (1 + s)`.  The plan's leaves are at least
  :math:`r_{\\rm near}/(1 - s)` wide, so two atoms in non-adjacent leaves stay at least
  :math:`r_{\\rm near}` apart and every pair closer than the near-field kernel's range is
  still summed in the near field.  (The FMM itself returns NaN beyond this, never a
  silently wrong number.)
* **SOG**: every atom lies within ``skin / 2`` of its planned position,
  :math:`\\max_i |r_i - r_i^{\\rm plan}| \\le s/2`, so the pair list (cutoff plus skin)
  and the grids' margins still hold.

* **P3M mesh** (periodic cells, latent Coulomb with ``method: p3m``): the mesh shape for
  the cell (:func:`lrnn.longrange.pme.mesh_shape`); it does not depend on the positions,
  so it holds for a fixed cell, and a cell whose mesh would differ is re-planned.

Plans exist for structures with at least ``fmm_min_atoms`` atoms; otherwise
:func:`allocate` returns empty plans and the model uses its exact sums (or, for periodic
cells, its ``reciprocal`` k-space sum).  The same plans
serve :class:`lrnn.potential.Potential` (and so the ASE calculator) and :mod:`lrnn.md`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lrnn import fmm
from lrnn.fmm.tree import FMMPlan, plan_is_valid
from lrnn.longrange import pme, sog

#: Relative slack of the FMM plans (see the module docstring).
FMM_SKIN = 0.1
#: Relative padding of a first FMM plan; re-plans take the previous sizes as floors.
FMM_HEADROOM = 0.1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MeshPlan:
    """The P3M mesh of a periodic cell: its ``shape`` (static; no array leaves)."""

    shape: tuple = dataclasses.field(metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Plans:
    """The plans of one structure: ``fmm`` (:class:`~lrnn.fmm.tree.FMMPlan` or None),
    ``sog`` (:class:`~lrnn.longrange.sog.SOGPlan` or None) and ``did_overflow`` (a bool
    array: some plan no longer holds for the positions :func:`update` last saw).  Static:
    ``n_atoms`` and ``periodic``, the structure they were allocated for; ``mesh``
    (:class:`MeshPlan` or None) the P3M mesh of a periodic cell."""

    fmm: FMMPlan | None
    sog: sog.SOGPlan | None
    did_overflow: jax.Array
    n_atoms: int = dataclasses.field(default=0, metadata=dict(static=True))
    periodic: bool = dataclasses.field(default=False, metadata=dict(static=True))
    mesh: MeshPlan | None = None

    @property
    def empty(self) -> bool:
        return self.fmm is None and self.sog is None and self.mesh is None

    def inputs(self) -> dict:
        """The model inputs these plans provide (``fmm_plan``, ``sog_plan``, ``p3m_mesh``; only
        those in use)."""
        out = {"fmm_plan": self.fmm, "sog_plan": self.sog, "p3m_mesh": self.mesh}
        return {k: v for k, v in out.items() if v is not None}


def empty(n_atoms: int = 0, periodic: bool = False) -> Plans:
    """Plans of a structure evaluated with exact sums only."""
    return Plans(None, None, jnp.zeros((), bool), int(n_atoms), bool(periodic))


def sog_widths(config, state) -> np.ndarray | None:
    """The Gaussian widths (Å) of the model's hierarchical SOG term, read from the
    network ``state`` (an ``nnx.State``), or None without such a term."""
    k = config.hierarchical_sog_term()
    if k is None:
        return None
    return np.exp(np.asarray(state[f"term{k}"]["log_width"][...], np.float64))


def allocate(config, positions, cell=None, *, sog_widths=None, previous: Plans | None = None) -> Plans:
    """Plans for concrete ``positions`` (N, 3) Å (host, NumPy; not jittable).

    ``config``: the model's typed config (``fmm_leaf_side``, ``fmm_order``,
    ``fmm_min_atoms``, ``hierarchical_sog_term``); ``cell``: None for open boundaries
    (periodic structures get empty plans); ``sog_widths``: the SOG term's widths (Å),
    see :func:`sog_widths`.  The FMM plan is left out (exact sums) when even a depth-2 tree
    has leaves narrower than the near-field kernels need.  ``previous``: the plans being
    replaced; their padded sizes are floors for the new ones (capacities only grow), so a
    re-plan along a trajectory rarely changes array shapes and recompiles."""
    pos = np.asarray(positions, np.float64)
    if len(pos) < config.fmm_min_atoms:
        return empty(len(pos), cell is not None)
    if cell is not None:
        spacing = config.p3m_spacing()
        if spacing is None:
            return empty(len(pos), True)
        return Plans(None, None, jnp.zeros((), bool), len(pos), True, MeshPlan(pme.mesh_shape(cell, spacing)))
    plan_f = plan_s = None
    side = config.fmm_leaf_side()
    if side is not None:
        like = None if previous is None or previous.n_atoms != len(pos) else previous.fmm
        p = fmm.plan(pos, order=config.fmm_order, min_leaf_side=side / (1 - FMM_SKIN), tol=FMM_SKIN, like=like,
                     headroom=FMM_HEADROOM)
        plan_f = p if float(p.leaf_side) * (1 - FMM_SKIN) >= side else None
    if config.hierarchical_sog_term() is not None:
        if sog_widths is None:
            raise ValueError("allocate: the model has a hierarchical SOG term; pass sog_widths (Å)")
        plan_s = sog.sog_plan(pos, sog_widths)
    return Plans(plan_f, plan_s, jnp.zeros((), bool), len(pos), False)


def valid(plans: Plans, positions) -> jax.Array:
    """True (a traced bool) while every plan holds for ``positions`` (rows after a plan's
    atoms are padding and not checked); jittable, O(N)."""
    ok = jnp.ones((), bool)
    if plans.fmm is not None:
        ok = ok & plan_is_valid(plans.fmm, positions[: plans.fmm.n])
    if plans.sog is not None:
        ok = ok & sog.sog_plan_is_valid(plans.sog, positions)
    return ok


def update(plans: Plans, positions) -> Plans:
    """``plans`` with ``did_overflow`` set if some plan no longer holds for ``positions``
    (jittable, O(N); the flag is sticky, as jax-md's ``did_buffer_overflow``)."""
    return dataclasses.replace(plans, did_overflow=plans.did_overflow | ~valid(plans, positions))


def needs_replan(plans: Plans | None, positions, cell=None, sog_widths=None, config=None) -> bool:
    """Whether ``plans`` must be re-allocated for concrete ``positions`` (host): none yet,
    another atom count or boundary, a plan that no longer holds, other SOG widths, or a
    cell whose P3M mesh (for ``config``'s spacing) differs from the planned one."""
    pos = np.asarray(positions, np.float64)
    if plans is None or plans.n_atoms != len(pos) or plans.periodic != (cell is not None):
        return True
    if plans.mesh is not None and config is not None:
        return pme.mesh_shape(cell, config.p3m_spacing()) != plans.mesh.shape
    if plans.sog is not None and sog.sog_needs_replan(plans.sog, pos, sog_widths):
        return True
    return not plans.empty and not bool(valid(plans, jnp.asarray(pos)))
