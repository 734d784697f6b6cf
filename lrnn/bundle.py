r"""One model bundle: pure ``init`` / ``apply`` over a single params pytree.

In the style of jax-md and optax, a model is a pair of pure functions::

    model = lrnn.bundle.model(config)                 # or: model, params = lrnn.bundle.load(path)
    params = model.init(seed)                         # Params(weights, stats, energy_shift)
    system, neighbors = lrnn.bundle.prepare(model, positions, numbers, cell=None)
    energy = model.apply(params, system, neighbors)   # eV
    res = lrnn.bundle.energy_forces_virial(model, params, system, neighbors)

The energy of a structure is

.. math::

    E(R, h) = E_{\rm net}(R, h;\ w, s) + \sum_i e_{t_i},\qquad
    F_i = -\frac{\partial E}{\partial R_i},\qquad
    W = -\left.\frac{\partial E(R(1+\varepsilon)^\top, h(1+\varepsilon)^\top)}
    {\partial \varepsilon}\right|_{\varepsilon=0},\qquad \sigma = -W/V,

with :math:`E_{\rm net}` the local model plus its long-range terms (network weights
:math:`w`, descriptor statistics :math:`s`), :math:`e_t` the per-element energy shifts
(eV) and :math:`h` the cell rows (Å).  :class:`Params` holds all three, and it is what a
checkpoint stores (:func:`load`, :func:`save`): the weights in orbax, statistics and
shifts in ``lrnn.json``.

Precision: the shifts are kept as float64 NumPy on the host.  Inside ``jit`` they take the
computation's dtype, so a float32 evaluation of a large absolute energy (thousands of eV)
is rounded to float32's resolution.  :class:`Results` therefore keeps the network energy
and the reference energy :math:`\sum_i e_{t_i}` apart; :func:`reference_energy` recomputes
the latter exactly on the host, as :class:`lrnn.potential.Potential` does.

Committees are params with the weights and shifts stacked along a leading member axis
(the statistics are shared): ``jax.vmap(model.apply, (MEMBER_AXES, None, None))(params,
system, neighbors)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lrnn import checkpoint as ckpt
from lrnn import models
from lrnn.batch import make_inputs
from lrnn.inputs import ModelInputs
from lrnn.neighbors import Capacity, Layout, species_to_types
from lrnn.nn import merge, split
from lrnn.plans import Plans
from lrnn.system import Dataset, resolve_total_charge, validate_structure


@dataclasses.dataclass(frozen=True)
class System:
    """One structure (a pytree; ``pbc`` is static).

    ``positions`` (N, 3) Å; ``species`` (N,) int32, the index of each atom's element in the
    model's ``type_map``, −1 for padding slots; ``cell`` (3, 3) Å, rows are the cell vectors
    (zeros in free space); ``total_charge`` () e; ``pbc`` periodicity per cell vector."""

    positions: jax.Array
    species: jax.Array
    cell: jax.Array
    total_charge: jax.Array
    pbc: tuple = (False, False, False)


jax.tree_util.register_dataclass(System, data_fields=["positions", "species", "cell", "total_charge"],
                                 meta_fields=["pbc"])


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything a trained model has learned or fitted (a pytree).

    ``weights``: the network parameters (an ``nnx.State``); ``stats``: descriptor
    normalisation statistics (dict of arrays); ``energy_shift`` (T,) eV: per-element
    reference energies, in ``type_map`` order (float64 NumPy on the host)."""

    weights: Any
    stats: dict
    energy_shift: Any


jax.tree_util.register_dataclass(Params, data_fields=["weights", "stats", "energy_shift"], meta_fields=[])

#: ``in_axes`` of a committee's params for ``jax.vmap``: weights and shifts per member, shared statistics
MEMBER_AXES = Params(0, None, 0)


class Results(NamedTuple):
    """Output of :func:`energy_forces_virial`: ``model_energy`` (eV, the network part),
    ``reference_energy`` (eV, :math:`\\sum_i e_{t_i}`), ``forces`` (N, 3) eV/Å, ``virial``
    (3, 3) eV and, when asked for, the latent ``charges`` (N,) e.  ``energy`` is the sum of
    the two energies."""

    model_energy: jax.Array
    reference_energy: jax.Array
    forces: jax.Array
    virial: jax.Array
    charges: Any = None

    @property
    def energy(self):
        return self.model_energy + self.reference_energy


class Model(NamedTuple):
    """A model: ``init(seed) -> Params`` and ``apply(params, system, neighbors, plans=None)
    -> E`` (eV), with its typed ``config``, the config dict it came from (``model_config``,
    as checkpoints store it), the static network structure ``graphdef`` and the computation
    ``dtype``.  Build one with :func:`model` or :func:`load`."""

    init: Callable[[int], Params]
    apply: Callable[..., jax.Array]
    config: Any
    model_config: dict
    graphdef: Any
    dtype: Any


def reference_energy(params: Params, species) -> Any:
    """:math:`\\sum_i e_{t_i}` (eV) over the atoms with ``species >= 0``: float64 NumPy for
    NumPy species (exact, host), the computation dtype for traced ones; 0 for params
    without shifts (``energy_shift`` None)."""
    if params.energy_shift is None:
        return 0.0
    if isinstance(species, np.ndarray):  # (..., N) -> (...); a committee's (K, T) shifts -> (..., K)
        shift = np.asarray(params.energy_shift, np.float64)
        counts = (species[..., None] == np.arange(shift.shape[-1])).sum(axis=-2)
        return counts.astype(np.float64) @ shift.T
    shift = jnp.asarray(params.energy_shift)
    return jnp.sum(jnp.where(species >= 0, shift[jnp.maximum(species, 0)], 0.0), axis=-1)


def from_inputs(inputs: ModelInputs):
    """``(System, Layout, plans)`` from :class:`~lrnn.inputs.ModelInputs` of one structure
    (:func:`lrnn.batch.make_inputs`, optionally with plans)."""
    system = System(inputs.positions, inputs.types, inputs.cell, inputs.total_charge)
    return system, inputs.layout, inputs.plans


def model_inputs(system: System, neighbors: Layout, plans=None) -> ModelInputs:
    """What the model reads (:class:`~lrnn.inputs.ModelInputs`) for one structure, its
    neighbour layout and its plans (:class:`~lrnn.plans.Plans`, a dict of plans, or None);
    the inverse of :func:`from_inputs`."""
    if isinstance(plans, Plans):
        plans = plans.inputs()
    return ModelInputs(system.positions, system.species, system.cell, system.total_charge, neighbors).with_plans(plans)


def network_energy(graphdef, params: Params, system: System, neighbors: Layout, plans=None) -> jax.Array:
    """:math:`E_{\\rm net}` (eV): the model without the per-element shifts."""
    return merge(graphdef, params.weights).energy(model_inputs(system, neighbors, plans), params.stats)


def _apply(graphdef, params: Params, system: System, neighbors: Layout, plans=None) -> jax.Array:
    e = network_energy(graphdef, params, system, neighbors, plans)
    return e + reference_energy(params, system.species).astype(e.dtype)


def _init(config: dict, dtype):
    def init(seed: int = 0) -> Params:
        """Fresh weights from ``seed``, unit statistics and zero shifts (fit both to data
        before training: :func:`lrnn.models.deeppot.compute_stats`, ``fit_energy_shift``)."""
        _, state = split(models.create(config, seed=seed, dtype=dtype))
        t = len(config["type_map"])
        stats = {"s_avg": jnp.zeros(t, dtype), "s_std": jnp.ones(t, dtype), "dir_std": jnp.ones(t, dtype),
                 "n_norm": jnp.asarray(50.0, dtype)}
        return Params(state, stats, np.zeros(t))
    return init


def model(config: dict, dtype: str = "float32") -> Model:
    """The :class:`Model` of a model config dict (``{"type": ..., "type_map": [...], ...}``)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    config = dict(config)
    _, typed = models.model_config(config)
    graphdef, _ = split(models.create(config, dtype=jdt))

    def apply(params: Params, system: System, neighbors: Layout, plans=None) -> jax.Array:
        """Total energy (eV) of ``system`` (see the module docstring)."""
        return _apply(graphdef, params, system, neighbors, plans)

    return Model(_init(config, jdt), apply, typed, config, graphdef, jdt)


def energy_forces_virial(model: Model, params: Params, system: System, neighbors: Layout, plans=None, *,
                         with_charges: bool = False) -> Results:
    """Energy, forces and virial of one structure from a single backward pass (the module
    docstring has the maths); with ``with_charges`` also the latent charges of the model's
    first charge term, from the same descriptors.  Traceable; vmap it over structures or
    over stacked params (committees)."""
    return efv(model.graphdef, params, system, neighbors, plans, with_charges)


def efv(graphdef, params: Params, system: System, neighbors: Layout, plans=None,
        with_charges: bool = False) -> Results:
    """:func:`energy_forces_virial` for a bare ``graphdef`` (the one implementation every
    caller shares: trainer, :class:`~lrnn.potential.Potential`, ASE calculator)."""
    pos, cell = system.positions, system.cell

    def e_of(p, eps):
        f = jnp.eye(3, dtype=p.dtype) + eps
        s = dataclasses.replace(system, positions=p @ f.T, cell=cell @ f.T)
        if with_charges:
            return merge(graphdef, params.weights).energy_and_charges(model_inputs(s, neighbors, plans), params.stats)
        return network_energy(graphdef, params, s, neighbors, plans), None

    (e, q), (g_pos, g_eps) = jax.value_and_grad(e_of, argnums=(0, 1), has_aux=True)(
        pos, jnp.zeros((3, 3), pos.dtype))
    ref = jnp.asarray(reference_energy(params, system.species), e.dtype)
    return Results(e, ref, -g_pos, -g_eps, q)


def prepare(model: Model, positions, numbers, cell=None, pbc=None, total_charge=None,
            capacity: Capacity | None = None):
    """Host side (NumPy in): validate one structure and return ``(System, Layout)`` for
    :attr:`Model.apply`.  ``positions`` (N, 3) Å, ``numbers`` (N,) atomic numbers, ``cell``
    (3, 3) Å or None (free space), ``total_charge`` e (None: neutral, see
    :func:`lrnn.system.resolve_total_charge`); ``capacity``: a neighbour capacity to use
    (default: the smallest that fits)."""
    positions = np.asarray(positions, np.float64)
    numbers = np.asarray(numbers, np.int64)
    cfg = model.config
    validate_structure(positions, numbers, cell, pbc, allowed=cfg.type_map)
    q = resolve_total_charge(total_charge, numbers, cfg.has_charge_terms)
    if cell is None:
        cell_a, pbc_a = np.zeros((3, 3)), np.zeros(3, bool)
    else:
        cell_a = np.asarray(cell, np.float64).reshape(3, 3)
        pbc_a = np.ones(3, bool) if pbc is None else np.broadcast_to(np.asarray(pbc, bool), (3,))
    ds = Dataset(positions[None], numbers[None], np.zeros(1), cell=cell_a[None], pbc=pbc_a[None],
                 total_charge=np.array([q]))
    dt = np.dtype(model.dtype)
    inputs, _ = make_inputs(ds, cfg, capacity, dtype=dt)
    system = System(jnp.asarray(positions, dt), jnp.asarray(species_to_types(numbers, cfg.type_map), jnp.int32),
                    jnp.asarray(cell_a, dt), jnp.asarray(q, dt), tuple(bool(x) for x in pbc_a))
    layout = jax.tree.map(lambda x: jnp.asarray(x[0]), inputs.layout)
    return system, layout


def load(path) -> tuple[Model, Params]:
    """``(Model, Params)`` of a checkpoint written by ``lrnn train`` (any version lrnn
    wrote: the format is unchanged, see :mod:`lrnn.checkpoint`).  A committee checkpoint
    (``train.committee: K``) gives params with a leading member axis of length K on the
    weights and shifts (the statistics are shared): vmap ``apply`` over them."""
    meta, leaves, _ = ckpt.load(Path(path))
    dtype = "float64" if meta.get("dtype") == "float64" else "float32"
    m = model(meta["model"], dtype)
    _, template = split(models.create(meta["model"], dtype=m.dtype))
    t_leaves, treedef = jax.tree.flatten(template)
    lead = (int(meta["committee"]),) if meta.get("committee", 1) > 1 else ()
    if len(t_leaves) != len(leaves) or any(lead + a.shape != np.shape(b) for a, b in zip(t_leaves, leaves)):
        raise ckpt.CheckpointError(f"{path}: parameters do not match the model config in lrnn.json")
    weights = jax.tree.unflatten(treedef, [jnp.asarray(x, m.dtype) for x in leaves])
    stats = {k: jnp.asarray(v, m.dtype) for k, v in meta["stats"].items()}
    return m, Params(weights, stats, np.asarray(meta["energy_shift"], np.float64))


def save(path, model: Model, params: Params, meta: dict | None = None) -> Path:
    """Write ``params`` as a checkpoint :func:`load` (and ``lrnn.load``) reads; ``meta``:
    extra JSON metadata (training records)."""
    meta = dict(meta or {})
    meta.update(model=model.model_config, dtype=np.dtype(model.dtype).name,
                stats={k: np.asarray(v).tolist() for k, v in params.stats.items()},
                energy_shift=np.asarray(params.energy_shift, np.float64).tolist())
    return ckpt.save(Path(path), meta=meta, params=params.weights)


def config_difference(a: dict, b: dict) -> str:
    """How two model configs differ, for error messages (empty when they are equal):
    ``"['rcut'] (6.0 vs 5.0)"``."""
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f"{keys} ({[a.get(k) for k in keys]} vs {[b.get(k) for k in keys]})" if keys else ""


def combine(paths) -> tuple[Model, Params, dict]:
    """One committee from separately trained checkpoints (each a single model or a
    committee; members in order): ``(Model, Params, meta)``, written by :func:`save` as a
    committee checkpoint.  The members must share the model config (species, cutoffs,
    architecture), precision and descriptor statistics (trained on the same data): a
    committee evaluates one descriptor normalisation, so anything else is an error."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError(f"a committee needs at least 2 checkpoints, got {len(paths)}")
    metas = [ckpt.read_meta(p) for p in paths]
    loaded = [load(p) for p in paths]
    m0, p0 = loaded[0]
    for path, (m, p) in zip(paths[1:], loaded[1:]):
        diff = config_difference(m0.model_config, m.model_config)
        if diff:
            raise ValueError(f"cannot combine {paths[0]} and {path}: their models differ in {diff}")
        if m.dtype != m0.dtype:
            raise ValueError(f"cannot combine {paths[0]} ({np.dtype(m0.dtype).name}) and {path} "
                             f"({np.dtype(m.dtype).name}): different precision")
        for k in p0.stats:
            if not np.allclose(np.asarray(p.stats[k]), np.asarray(p0.stats[k]), rtol=1e-6, atol=0):
                raise ValueError(f"cannot combine {paths[0]} and {path}: descriptor statistics {k!r} differ "
                                 "(members trained on different data); train them with one data section")
    sizes = [int(meta.get("committee", 1)) for meta in metas]
    as_members = [(jax.tree.map(lambda x: x[None], p.weights), np.asarray(p.energy_shift)[None]) if k == 1
                  else (p.weights, np.asarray(p.energy_shift)) for (_, p), k in zip(loaded, sizes)]
    weights = jax.tree.map(lambda *x: jnp.concatenate(x), *[w for w, _ in as_members])
    shift = np.concatenate([s for _, s in as_members])
    meta = {k: metas[0][k] for k in ("units", "report_energy_unit", "capacity", "periodic", "requires_cell")
            if k in metas[0]}
    meta.update(committee=int(sum(sizes)), combined_from=[str(p) for p in paths])
    return m0, Params(weights, p0.stats, shift), meta
