"""Public entry points: planning, the dispatcher (direct vs FMM) and energies."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lrnn.fmm.core import potential_with_plan as _potential_with_plan
from lrnn.fmm.direct import direct_potential
from lrnn.fmm.tree import FMMPlan, build_plan, plan_is_valid

__all__ = ["plan", "potential_with_plan", "laplace_potential", "laplace_energy",
           "needs_replan", "DIRECT_MAX_N", "DEFAULT_ORDER"]

#: Below this many particles the dispatcher uses the tiled direct sum (measured crossover
#: on a 2-core CPU; see experiments/results/fmm).
DIRECT_MAX_N = 3000
#: Default expansion order (relative RMS error ~1e-6 on uniform and Plummer inputs).
DEFAULT_ORDER = 8


def plan(positions, *, order: int = DEFAULT_ORDER, leaf_size: int = 32,
         max_leaf: int | None = None, depth: int | None = None,
         min_leaf_side: float | None = None, tol: float = 1e-6, like: FMMPlan | None = None,
         headroom: float = 0.0) -> FMMPlan:
    """Build an :class:`~lrnn.fmm.tree.FMMPlan` for concrete ``positions`` (NumPy, not jittable).

    See :func:`lrnn.fmm.tree.build_plan` for the arguments.  Re-use the plan across calls
    (and pass it through ``jit``) while :func:`needs_replan` is False.
    """
    return build_plan(_concrete(positions, "plan"), order=order, leaf_size=leaf_size,
                      max_leaf=max_leaf, depth=depth, min_leaf_side=min_leaf_side, tol=tol, like=like,
                      headroom=headroom)


@functools.partial(jax.jit, static_argnames=("near_kernel", "check"))
def _jit_potential(plan_, positions, charges, near_kernel=None, check=True):
    return _potential_with_plan(plan_, positions, charges, near_kernel=near_kernel, check=check)


def potential_with_plan(plan: FMMPlan, positions, charges, *, near_kernel=None,
                        check: bool = True):
    """Jitted FMM potential for a fixed plan (see :func:`lrnn.fmm.core.potential_with_plan`).

    Works under ``jit``, ``vmap`` and ``grad``; returns NaN if a particle left its leaf.
    ``near_kernel`` must be hashable (a module-level function, not a fresh lambda per call,
    or it recompiles every time).
    """
    return _jit_potential(plan, positions, charges, near_kernel=near_kernel, check=check)


def needs_replan(plan: FMMPlan, positions) -> bool:
    """True if some particle left its leaf (or N changed): the plan must be rebuilt."""
    if np.shape(positions) != (plan.n, 3):
        return True
    return not bool(plan_is_valid(plan, jnp.asarray(positions)))


def _concrete(x, what):
    """NumPy value of ``x`` if it is known now (eager, or under eager grad); else None."""
    if isinstance(x, jax.core.Tracer):
        try:
            v = x.to_concrete_value()
        except Exception:  # noqa: BLE001
            v = None
        if v is None:
            if what == "plan":
                raise ValueError(
                    "lrnn.fmm.plan needs concrete positions (it builds the octree in NumPy); "
                    "build the plan outside jit/vmap and pass plan=... inside")
            return None
        return np.asarray(v)
    return np.asarray(x)


def _validate(positions, charges):
    if positions.ndim != 2 or positions.shape[-1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if positions.shape[0] < 2:
        raise ValueError(f"need at least 2 particles, got {positions.shape[0]}")
    if charges.shape != positions.shape[:1]:
        raise ValueError(f"charges must have shape ({positions.shape[0]},) to match positions, "
                         f"got {charges.shape}")


def laplace_potential(positions, charges, *, order: int = DEFAULT_ORDER, method: str = "auto",
                      plan: FMMPlan | None = None, near_kernel=None, leaf_size: int = 32,
                      direct_max_n: int = DIRECT_MAX_N):
    r"""φ_i = Σ_{j≠i} q_j / |r_i − r_j| (open boundaries; Gaussian units, multiply by
    :data:`lrnn.units.COULOMB_K` for eV with charges in e and lengths in Å).

    ``method``: ``"auto"`` (direct sum for N ≤ ``direct_max_n``, else FMM), ``"direct"``
    (tiled exact O(N²)) or ``"fmm"``.  ``order``: FMM expansion order p (5..14; the
    relative RMS error falls roughly as 4^-p, ~5e-4 at p=5, ~1e-5 at p=8, ~1e-7 at p=14).
    ``plan``: a plan from :func:`lrnn.fmm.plan`.  Without one the plan is built from the
    concrete positions (possible eagerly and under eager ``jax.grad``); under ``jit`` or a
    ``vmap`` over positions pass ``plan=`` built outside (or use ``method="direct"``).
    If concrete positions left the given plan's leaves, it is re-planned automatically;
    under ``jit`` a stale plan yields NaN, never a silently wrong number.
    ``near_kernel``: optional function of r² replacing 1/r at short range (see
    :mod:`lrnn.fmm.core`).  Differentiable w.r.t. positions and charges.
    """
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(jnp.result_type(float))
    charges = jnp.asarray(charges, dtype=positions.dtype)
    _validate(positions, charges)
    n = positions.shape[0]
    if method not in ("auto", "direct", "fmm"):
        raise ValueError(f"method must be 'auto', 'direct' or 'fmm', got {method!r}")
    x = _concrete(positions, "check")
    if x is not None and not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(f"positions contain NaN/inf (particles {bad[:5].tolist()})")
    if method == "direct" or (method == "auto" and plan is None and n <= direct_max_n):
        return direct_potential(positions, charges, kernel=near_kernel)
    if plan is not None and plan.n != n:
        raise ValueError(f"plan is for {plan.n} particles, got {n}")
    if plan is None or (x is not None and needs_replan(plan, x)):
        if x is None:
            raise ValueError(
                "the FMM needs a plan built from concrete positions: under jit/vmap over "
                "positions pass plan=lrnn.fmm.plan(positions) (or use method='direct')")
        if plan is not None:  # stale plan: re-plan with the same settings
            order, leaf_size = plan.order, plan.leaf_size
        plan = build_plan(x, order=order, leaf_size=leaf_size)
    return potential_with_plan(plan, positions, charges, near_kernel=near_kernel)


def laplace_energy(positions, charges, **kwargs):
    r"""E = ½ Σ_i q_i φ_i (same arguments as :func:`laplace_potential`).

    ``-jax.grad(laplace_energy)(positions, charges)`` are the forces and
    ``jax.grad(laplace_energy, argnums=1)`` is φ.
    """
    phi = laplace_potential(positions, charges, **kwargs)
    return 0.5 * jnp.sum(jnp.asarray(charges, phi.dtype) * phi)
