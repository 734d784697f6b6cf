"""Fast multipole method for the 3-D Laplace (Coulomb) kernel, in JAX.

Public API::

    phi = lrnn.fmm.laplace_potential(positions, charges, order=8)   # φ_i = Σ_{j≠i} q_j/r_ij
    E = lrnn.fmm.laplace_energy(positions, charges)                  # ½ Σ q_i φ_i
    plan = lrnn.fmm.plan(positions, order=8)                         # NumPy, outside jit
    phi = lrnn.fmm.potential_with_plan(plan, positions, charges)     # jittable, differentiable
    lrnn.fmm.needs_replan(plan, new_positions)                       # cheap O(N) check
    phi = lrnn.fmm.direct_potential(positions, charges)              # tiled exact O(N²)

Plan/compute split: :mod:`lrnn.fmm.tree` (octree, lists, static shapes),
:mod:`lrnn.fmm.core` (P2M, M2M, M2L, L2L, L2P, P2P), :mod:`lrnn.fmm.harmonics` (solid
harmonics, translation operators and their maths), :mod:`lrnn.fmm.direct`.
Periodic systems: :mod:`lrnn.longrange.pme` (jax-pme).
"""

from lrnn.fmm.api import (
    DEFAULT_ORDER,
    DIRECT_MAX_N,
    laplace_energy,
    laplace_potential,
    needs_replan,
    plan,
    potential_with_plan,
)
from lrnn.fmm.direct import direct_potential
from lrnn.fmm.tree import MAX_ORDER, MIN_ORDER, FMMPlan, plan_is_valid

__all__ = ["laplace_potential", "laplace_energy", "plan", "potential_with_plan",
           "needs_replan", "direct_potential", "FMMPlan", "plan_is_valid",
           "DEFAULT_ORDER", "DIRECT_MAX_N", "MIN_ORDER", "MAX_ORDER"]
