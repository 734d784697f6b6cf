"""The training loop: optax Adam with exponential decay, DeePMD loss prefactor schedules,
padded mini-batches, validation, best/last checkpoints, exact ``--resume``, metrics,
progress bar and learning-curve plot."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lrnn import bundle, models
from lrnn import checkpoint as ckpt
from lrnn.batch import make_inputs, make_labels
from lrnn.models.deeppot import compute_stats, fit_energy_shift, fit_input_stats, shift_energy
from lrnn.nn import count_parameters, merge, split
from lrnn.plots import learning_curve
from lrnn.potential import batched_efv, committee_efv, energy_fn, energy_forces_virial
from lrnn.system import concatenate
from lrnn.train.config import TrainConfig
from lrnn.train.data import load_data
from lrnn.train.metrics import MetricsWriter, error_metrics, read_metrics
from lrnn.uncertainty import force_spearman, spread

log = logging.getLogger("lrnn.train")


def make_schedule(tc: TrainConfig):
    decay_rate = (tc.lr_stop / tc.lr_start) ** (tc.decay_steps / max(tc.max_steps, 1))
    return optax.exponential_decay(tc.lr_start, tc.decay_steps, decay_rate, end_value=tc.lr_stop)


def prefactors(tc: TrainConfig, lr):
    r = lr / tc.lr_start
    pe = tc.pref_e_limit + (tc.pref_e_start - tc.pref_e_limit) * r
    pf = tc.pref_f_limit + (tc.pref_f_start - tc.pref_f_limit) * r
    pv = tc.pref_v_limit + (tc.pref_v_start - tc.pref_v_limit) * r
    return pe, pf, pv


def stage_prefactors(tc: TrainConfig, lr, frac: float):
    """Prefactors (energy, force, virial) at learning rate ``lr`` and budget fraction ``frac``:
    the schedule's, or the constant stage-2 energy and force weights from ``stage2_from`` on."""
    pe, pf, pv = prefactors(tc, lr)
    if tc.stage2_from > 0 and frac >= tc.stage2_from:
        return tc.stage2_pref_e, tc.stage2_pref_f, pv
    return pe, pf, pv


def ema_update(ema, new, decay: float, n):
    """``ema_decay``'s moving average after step ``n`` (0-based), with MACE's warm-up
    ``d_n = min(decay, (1 + n) / (10 + n))``."""
    d = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
    return jax.tree.map(lambda a, b: (d * a + (1 - d) * b).astype(a.dtype), ema, new)


def loss_terms(pred, labels):
    """Mean-square errors: energy per atom (eV²), force components (eV²/Å²), virial per
    atom (eV²), each over the structures/atoms that carry the label (and, with a
    ``weight`` label, 0 for the padding of a sharded batch, over the real structures)."""
    e, f, w = pred
    n = labels["n_atoms"]
    real = labels["weight"] > 0 if "weight" in labels else None
    if real is None:
        le = jnp.mean(((e - labels["energy"]) / n) ** 2)
    else:
        le = jnp.sum(jnp.where(real, ((e - labels["energy"]) / n) ** 2, 0.0)) / jnp.maximum(jnp.sum(real), 1)
        labels = dict(labels, has_forces=labels["has_forces"] & real, has_virial=labels["has_virial"] & real,
                      has_charges=labels["has_charges"] & real)
    fmask = (labels["mask"] & labels["has_forces"][:, None])[..., None]
    lf = jnp.sum(jnp.where(fmask, (f - labels["forces"]) ** 2, 0.0)) / jnp.maximum(3.0 * jnp.sum(fmask), 1.0)
    hv = labels["has_virial"]
    lv = jnp.sum(jnp.where(hv, jnp.sum((w - labels["virial"]) ** 2, axis=(1, 2)) / n**2, 0.0))
    lv = lv / jnp.maximum(9.0 * jnp.sum(hv), 1.0)
    return le, lf, lv


def committee_force_nll(f_members, labels, var_floor: float):
    r"""The committee's Gaussian negative log-likelihood of the reference forces, per force
    component (eV/Å units; ``f_members`` (K, B, N, 3)):

    .. math::

        \mathcal L = \Big\langle \tfrac12\log(\sigma_{i\alpha}^2 + \epsilon)
          + \frac{(F^{\rm ref}_{i\alpha} - [\bar F_{i\alpha}])^2}{2(\sigma_{i\alpha}^2 + \epsilon)}\Big\rangle,
        \qquad \sigma^2_{i\alpha} = \tfrac1K\sum_k (F^{(k)}_{i\alpha} - \bar F_{i\alpha})^2,

    averaged over the real atoms of structures with forces; :math:`[\bar F]` is held fixed
    (stop-gradient), so the term moves the members apart or together about their mean
    (:math:`\sum_k \partial\sigma^2/\partial F^{(k)} = 0`) and leaves the mean to the
    members' own losses; ε (``var_floor``, eV²/Å²) keeps the components on which the members
    agree (σ → 0, a gradient ∝ δ²/σ⁴) from dominating the term."""
    mean = jax.lax.stop_gradient(f_members.mean(axis=0))
    var = jnp.mean((f_members - f_members.mean(axis=0)) ** 2, axis=0) + var_floor
    has = labels["has_forces"] & (labels["weight"] > 0) if "weight" in labels else labels["has_forces"]
    fmask = jnp.broadcast_to((labels["mask"] & has[:, None])[..., None], var.shape)
    nll = 0.5 * jnp.log(var) + (labels["forces"] - mean) ** 2 / (2.0 * var)
    return jnp.sum(jnp.where(fmask, nll, 0.0)) / jnp.maximum(jnp.sum(fmask), 1.0)


def charge_loss(graphdef, state, stats, inputs, labels):
    """Mean-square error (e²) of the latent charges against reference charges, over the
    atoms of structures that carry them."""
    q = jax.vmap(lambda x: merge(graphdef, state).charges(x, stats))(inputs)
    return charge_mse(q, labels)


def charge_mse(q, labels):
    """Masked mean-square error (e²) of predicted charges ``q`` (M, N) against the labels."""
    m = labels["mask"] & labels["has_charges"][:, None]
    return jnp.sum(jnp.where(m, (q - labels["charges"]) ** 2, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)


def train(cfg: dict, resume: bool = False, quiet: bool = False, datasets: dict | None = None) -> dict:
    """Train the model described by a run config (see :func:`lrnn.train.config.load_config`).

    Writes ``OUTPUT/checkpoint`` (best validation), ``OUTPUT/last`` (with optimiser state,
    for ``resume``), ``OUTPUT/metrics.csv`` and ``OUTPUT/learning_curve.png``; returns a
    summary dict.  ``datasets`` ({"train", "val"[, "report_energy_unit"]}, each a
    :class:`~lrnn.system.Dataset`) replaces the ``data`` section's files, for scripts that
    split data themselves."""
    tc: TrainConfig = cfg["train"]
    out = Path(cfg["output"])
    out.mkdir(parents=True, exist_ok=True)
    if tc.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if tc.dtype == "float64" else jnp.float32
    npdt = np.dtype(dtype)

    if datasets is not None:
        data = {"report_energy_unit": "eV", **datasets}
    else:
        data = load_data(cfg["data"], cfg.get("base", "."))
    train_ds, val_ds = data["train"], data["val"]
    train_ds.validate(require_forces=tc.uses_forces)
    val_ds.validate(require_forces=tc.uses_forces)
    if tc.uses_virial and train_ds.virial is None:
        raise ValueError("the virial prefactor is non-zero but the training data have no virial labels")

    model_cfg = dict(cfg["model"])
    model_cfg.setdefault("type", "deeppot_se")
    model_cfg.setdefault("type_map", sorted(set(train_ds.elements) | set(val_ds.elements)))
    kind, mcfg = models.model_config(model_cfg)
    model_cfg["type_map"] = list(mcfg.type_map)
    if tc.pref_q > 0:
        if train_ds.charges is None:
            raise ValueError("pref_q > 0 but the training data have no reference atomic charges")
        if not any(t.type in ("latent_coulomb", "sog") for t in getattr(mcfg, "long_range", ())):
            raise ValueError("pref_q > 0 needs a latent-charge term (latent_coulomb or sog) in model.long_range")

    last_path, best_path = out / "last", out / "checkpoint"
    resumed = None
    if resume:
        if not last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path} to resume from")
        resumed = ckpt.load(last_path, with_train_state=True)
        stats = {k: np.asarray(v) for k, v in resumed[0]["stats"].items()}
        shift = np.asarray(resumed[0]["energy_shift"])
    elif tc.init_from:
        warm = ckpt.load(tc.init_from)
        _check_warm_start(warm[0], model_cfg, int(tc.committee), tc.init_from)
        stats = {k: np.asarray(v) for k, v in warm[0]["stats"].items()}
        shift = np.asarray(warm[0]["energy_shift"])
        shift = shift.mean(axis=0) if shift.ndim == 2 else shift  # a committee's (K, T): the labels take one
    else:
        shift = fit_energy_shift(train_ds.numbers, train_ds.energy, mcfg.type_map)

    # one neighbour capacity for train and validation data: one compiled shape
    joint = concatenate([train_ds, val_ds])
    joint_inputs, cap = make_inputs(joint, mcfg, None, dtype=npdt)
    n_tr = len(train_ds)
    tr_inputs = jax.tree.map(lambda x: x[:n_tr], joint_inputs)
    va_inputs = jax.tree.map(lambda x: x[n_tr:], joint_inputs)
    if not (resume or tc.init_from):
        stats = compute_stats(mcfg, train_ds.positions, train_ds.cell, tr_inputs.layout)
    stats_j = {k: jnp.asarray(v, dtype) for k, v in stats.items()}
    jl = make_labels(joint, shift, mcfg.type_map, dtype=npdt)
    tr_labels = jax.tree.map(lambda x: x[:n_tr], jl)
    va_labels = jax.tree.map(lambda x: x[n_tr:], jl)

    K_out, R = int(tc.committee), int(tc.restarts)
    K = K_out * R  # models trained together: R copies of each member (restarts)
    if K > 1 and mcfg.hierarchical_sog_term() is not None:
        raise ValueError("train.committee > 1 with a hierarchical SOG term is not supported: each member would need "
                         "its own SOG plan (use method: direct or reciprocal, or train the members separately)")
    module = models.create(model_cfg, seed=tc.seed, dtype=dtype)
    graphdef, state = split(module)
    if getattr(mcfg, "fit_norm", False) and "d_avg" not in stats:  # of the initial weights (member 0)
        stats = dict(stats, **fit_input_stats(module, tr_inputs, stats_j))
        stats_j = {k: jnp.asarray(v, dtype) for k, v in stats.items()}
    if K > 1:  # a committee: members from seeds seed..seed+K-1, weights stacked on a leading axis
        members = [state] + [split(models.create(model_cfg, seed=tc.seed + k, dtype=dtype))[1] for k in range(1, K)]
        state = jax.tree.map(lambda *x: jnp.stack(x), *members)
    schedule = make_schedule(tc)

    def lr_at(step, elapsed):
        if tc.schedule == "time":
            frac = min(elapsed / tc.max_time_s, 1.0)
            return tc.lr_start * (tc.lr_stop / tc.lr_start) ** frac
        return float(schedule(step))

    if tc.init_from and resumed is None:
        state = jax.tree.unflatten(jax.tree.structure(state), [jnp.asarray(x, dtype) for x in warm[1]])
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=tc.lr_start)
    opt_state = tx.init(state)
    use_ema = tc.ema_decay > 0
    step0, epoch0, best_val, elapsed0 = 0, 0, (np.inf if K == 1 else np.full(K, np.inf)), 0.0
    if resumed is not None:
        meta, leaves, ts = resumed
        state = jax.tree.unflatten(jax.tree.structure(state), [jnp.asarray(x) for x in leaves])
        opt_leaves, opt_def = jax.tree.flatten(opt_state)
        opt_state = jax.tree.unflatten(opt_def, [jnp.asarray(x) for x in ts[: len(opt_leaves)]])
        if use_ema:  # ``last`` holds (optimiser state, moving average)
            if len(ts) != len(opt_leaves) + len(leaves):
                raise ValueError(f"--resume with ema_decay > 0: {last_path} holds no moving average of the weights "
                                 "(it was written by a run without ema_decay)")
            ema = jax.tree.unflatten(jax.tree.structure(state), [jnp.asarray(x) for x in ts[len(opt_leaves):]])
        step0, epoch0 = int(meta["train"]["step"]), int(meta["train"]["epoch"])
        best_val, elapsed0 = np.asarray(meta["train"]["best_val"], float), float(meta["train"].get("time_s", 0.0))
        best_val = float(best_val) if K == 1 else best_val
    if not (use_ema and resumed is not None):
        ema = state if use_ema else None

    tr_dev = jax.tree.map(jnp.asarray, (tr_inputs, tr_labels))
    bs = min(tc.batch_size, n_tr)
    n_batches = n_tr // bs
    # every device of every process (jax.distributed): each process holds the same data and
    # feeds its own devices' part of each batch; process 0 writes checkpoints and metrics
    n_dev = jax.device_count() if tc.devices == "auto" else int(tc.devices)
    if n_dev > jax.device_count():
        raise ValueError(f"train.devices = {n_dev} but only {jax.device_count()} device(s) are visible")
    if jax.process_count() > 1 and n_dev != jax.device_count():
        raise ValueError(f"train.devices = {n_dev}: a run over {jax.process_count()} processes uses all "
                         f"{jax.device_count()} devices (set train.devices: auto)")
    writer = jax.process_index() == 0
    member_w = None
    if K > 1 and tc.committee_subset < 1.0:  # member k sees a random subset (seed + k) of the training data
        member_w = np.zeros((K, n_tr), npdt)
        for k in range(K):
            keep = np.random.default_rng([tc.seed + k % K_out, 7]).permutation(n_tr)[:max(1, round(tc.committee_subset * n_tr))]
            member_w[k, keep] = 1.0
        member_w = jnp.asarray(member_w)
    mesh, pad = None, 0
    if n_dev > 1:
        mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev],
                             axis_types=(jax.sharding.AxisType.Auto,))  # GSPMD partitions the rest
        pad = -bs % n_dev  # structures of weight 0 that make the batch divide evenly
        replicated = NamedSharding(mesh, P())  # host copies first: the same values on every process
        state, opt_state, ema, tr_dev, stats_j = jax.device_put(
            jax.tree.map(np.asarray, (state, opt_state, ema, tr_dev, stats_j)), replicated)
        if member_w is not None:
            member_w = jax.device_put(np.asarray(member_w), replicated)

    # energy-only training (no force, virial or charge weight) needs no position gradient:
    # the loss is E alone, and its parameter gradient skips the double backward pass
    energy_only = not (tc.uses_forces or tc.uses_virial or tc.pref_q > 0)

    def member_loss(st, inputs, labels, pref):
        with_q = tc.pref_q > 0  # charges from the same descriptor pass as the energy
        if energy_only:
            e = jax.vmap(lambda x: energy_fn(graphdef, st, stats_j, x))(inputs)
            pred = (e, jnp.zeros_like(labels["forces"]), jnp.zeros_like(labels["virial"]))
        else:
            pred = jax.vmap(lambda x: energy_forces_virial(graphdef, st, stats_j, x, with_charges=with_q))(inputs)
        le, lf, lv = loss_terms(pred[:3], labels)
        loss = pref[0] * le + pref[1] * lf + pref[2] * lv
        if with_q:
            if "weight" in labels:
                labels = dict(labels, has_charges=labels["has_charges"] & (labels["weight"] > 0))
            loss = loss + tc.pref_q * charge_mse(pred[3], labels)
        return loss, ((le, lf, lv), pred[1])

    def loss_fn(st, inputs, labels, pref):
        if K == 1:
            loss, (terms, _) = member_loss(st, inputs, labels, pref)
            return loss, terms
        # without committee_nll the members are independent: the sum's gradient is each member's own
        shared = {k: v for k, v in labels.items() if k != "member_weight"}
        if "member_weight" in labels:  # (K, B): each member's own subset of the training data
            w = labels["member_weight"] * labels["weight"] if "weight" in labels else labels["member_weight"]
            loss, (terms, f) = jax.vmap(lambda s_, w_: member_loss(s_, inputs, dict(shared, weight=w_), pref))(st, w)
        else:
            loss, (terms, f) = jax.vmap(member_loss, in_axes=(0, None, None, None))(st, inputs, labels, pref)
        loss = jnp.sum(loss)
        if tc.committee_nll > 0:  # couples the members: their spread fitted to the mean's error
            loss = loss + tc.committee_nll * committee_force_nll(f, shared, tc.committee_nll_floor**2)
        return loss, jax.tree.map(jnp.mean, terms)

    @jax.jit
    def train_step(st, ost, ema, lr, pref, n, idx, dev):
        inputs, labels = jax.tree.map(lambda x: x[idx], dev)
        if pad:  # the batch padded to a multiple of the devices: the padding has weight 0
            labels = dict(labels, weight=(jnp.arange(idx.shape[0]) < bs).astype(npdt))
        if mesh is not None:  # data parallel: the batch split over the devices, the rest replicated
            inputs, labels = jax.lax.with_sharding_constraint((inputs, labels), NamedSharding(mesh, P("data")))
        if member_w is not None:  # (K, B): the member axis first, not sharded
            labels = dict(labels, member_weight=member_w[:, idx])
        ost.hyperparams["learning_rate"] = jnp.asarray(lr, ost.hyperparams["learning_rate"].dtype)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(st, inputs, labels, tuple(pref))
        updates, ost = tx.update(grads, ost, st)
        st = optax.apply_updates(st, updates)
        ema = ema_update(ema, st, tc.ema_decay, n) if use_ema else ema
        return st, ost, ema, loss / K, terms  # a committee logs its mean loss

    va_dev = jax.tree.map(jnp.asarray, va_inputs) if mesh is None else jax.device_put(va_inputs, replicated)

    def score_of(e, f):
        # model selection at the final prefactors, with the energy errors centred: the
        # constant offset is re-fitted on the training set after training
        pe, pf, _ = stage_prefactors(tc, tc.lr_stop, 1.0)
        de = (e - va_labels["energy"]) / va_labels["n_atoms"]
        df = (f - va_labels["forces"])[va_labels["mask"]]
        return pe * float(np.mean((de - de.mean()) ** 2)) + (pf * float(np.mean(df**2)) if tc.uses_forces else 0.0)

    def validate(st):
        """Metrics of the model (the committee mean) and the selection score (one per member)."""
        e, f = _predict_chunks(graphdef, st, stats_j, va_dev, len(val_ds), tc.batch_size * 4, K > 1)
        score = score_of(e, f) if K == 1 else np.array([score_of(e[k], f[k]) for k in range(K)])
        if K > 1:
            e, f = e.mean(0), f.mean(0)
        met = error_metrics(e, va_labels["energy"].astype(np.float64), va_labels["n_atoms"].astype(np.float64),
                             f, va_labels["forces"].astype(np.float64), va_labels["mask"])
        return met, score

    meta_base = {"model": model_cfg, "dtype": tc.dtype, "stats": stats, "energy_shift": shift,
                 "units": {"energy": "eV", "length": "Angstrom", "force": "eV/Angstrom"},
                 "report_energy_unit": data["report_energy_unit"], "capacity": [list(cap.centres), cap.neighbors],
                 "data": {k: str(v) for k, v in cfg["data"].items()}, "n_parameters": count_parameters(state),
                 "periodic": bool(train_ds.is_periodic),
                 "requires_cell": any(getattr(t, "needs_cell", False) for t in mcfg.long_range)}
    if K > 1:
        meta_base["committee"] = K

    def save(path, st, ost, step, epoch, bv, t, with_state):
        bv = bv.tolist() if isinstance(bv, np.ndarray) else bv
        meta = dict(meta_base, train={"step": step, "epoch": epoch, "best_val": bv, "time_s": t,
                                      "config": {k: getattr(tc, k) for k in tc.__dataclass_fields__}})
        if writer:
            ckpt.save(path, meta=meta, params=st, train_state=ost if with_state else None)
        return meta["train"]

    def saved_best():
        """Weights and record of the best checkpoint on disk (its kept copies, after restarts)."""
        meta, leaves, _ = ckpt.load(best_path)
        like = jax.tree.map(lambda a: a[restart_keep(meta["restarts"])], state) if "restarts" in meta else state
        return jax.tree.unflatten(jax.tree.structure(like), [jnp.asarray(x) for x in leaves]), meta["train"]

    def refit_delta(weights):
        """Correction (T,) or (K, T) of the per-element shifts: least squares on the training residuals."""
        e_tr, _ = _predict_chunks(graphdef, weights, stats_j, tr_dev[0], n_tr, tc.batch_size * 4, K > 1)
        resid = train_ds.energy - (e_tr + shift_energy(train_ds.numbers, shift, mcfg.type_map))
        return (fit_energy_shift(train_ds.numbers, resid, mcfg.type_map) if K == 1 else
                np.stack([fit_energy_shift(train_ds.numbers, r, mcfg.type_map) for r in resid]))

    def snapshot_path(t_snap):
        return out / f"checkpoint_at_{t_snap:g}s"

    def snapshot(t_snap, weights, record):
        """``checkpoint_at_{T}s``: the best weights so far with their shift re-fitted (if refit_shift)."""
        sh = np.asarray(shift) + refit_delta(weights) if tc.refit_shift else shift
        ckpt.save(snapshot_path(t_snap), meta=dict(meta_base, energy_shift=sh, energy_shift_refit=bool(tc.refit_shift),
                                                   train=dict(record, snapshot_at_s=t_snap)), params=weights)

    # snapshot times still to come (those taken before a resume are on disk); only the writer writes
    pending = [t for t in tc.snapshot_at_s if not snapshot_path(t).exists()] if writer else []

    metrics = MetricsWriter(out / f"metrics.{tc.metrics_format}", tc.metrics_format, resume, enabled=writer)
    if not quiet:
        log.info("training %s (%d parameters) on %s; validation %d structures", kind,
                 count_parameters(state), train_ds.describe(), len(val_ds))
    max_epochs = min(tc.max_epochs, int(np.ceil(tc.max_steps / n_batches)))
    total_steps = max_epochs * n_batches

    def prefs_at(step, elapsed, lr):
        frac = min(elapsed / tc.max_time_s, 1.0) if tc.schedule == "time" else step / tc.max_steps
        return stage_prefactors(tc, lr, frac)

    lr = tc.lr_start
    bar = None
    if tc.progress and not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if tc.schedule == "time" else total_steps, initial=step0, desc="train",
                   unit="step", dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter() - elapsed0
    last_save = time.perf_counter()
    best_state = None  # the best weights not yet written
    best_saved = best_path.exists()  # read once, before process 0 of a distributed run writes it
    best_weights, best_record = None, None  # the best weights and their record, for the shift re-fit
    compile_s = None
    step, epoch = step0, epoch0
    stopped_by_time = False
    loss_acc = []
    for epoch in range(epoch0, max_epochs):
        perm = np.random.default_rng([tc.seed, epoch]).permutation(n_tr)
        for b in range(n_batches):
            idx = perm[b * bs:(b + 1) * bs]
            idx = np.concatenate([idx, np.resize(idx, pad)]) if pad else idx
            elapsed = time.perf_counter() - t_start
            lr = lr_at(step, elapsed)
            pref = np.asarray(prefs_at(step, elapsed, lr), npdt)
            state, opt_state, ema, loss, _ = train_step(state, opt_state, ema, np.asarray(lr, npdt), pref,
                                                        np.asarray(step, npdt), idx, tr_dev)
            step += 1
            if compile_s is None:  # the time budget starts after the first (compiling) step
                jax.block_until_ready(loss)
                compile_s = time.perf_counter() - t_start - elapsed0
                t_start = time.perf_counter() - elapsed0
            if b % 20 == 0 or b == n_batches - 1:
                loss_acc.append(float(loss))
                if not np.isfinite(loss_acc[-1]):
                    raise FloatingPointError(f"training loss became {loss_acc[-1]} at step {step}; last good "
                                             f"checkpoint kept at {last_path}")
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_acc[-1]:.3g}", lr=f"{lr:.1e}")
            if bar is not None:
                bar.update(1)
        done = epoch + 1 >= max_epochs
        every = tc.val_every_steps  # validate in the epoch that reaches each multiple (0: every epoch)
        now = time.perf_counter() - t_start
        if every <= 0 or step // every > (step - n_batches) // every or done or (
                tc.max_time_s > 0 and now >= tc.max_time_s):
            weights = ema if use_ema else state  # the weights validated and kept
            met, score = validate(weights)
            now = time.perf_counter() - t_start
            pe, pf, pv = prefs_at(step, now, lr)
            row = {"step": step, "epoch": epoch + 1, "time_s": round(now, 3), "lr": lr,
                   "train_loss": float(np.mean(loss_acc)) if loss_acc else float("nan"),
                   "pref_e": pe, "pref_f": pf,
                   "val_energy_mae_eV": met["energy_mae"], "val_energy_rmse_eV": met["energy_rmse"],
                   "val_energy_mae_per_atom_eV": met["energy_mae_per_atom"],
                   "val_force_mae_eV_per_A": met.get("force_mae", float("nan")),
                   "val_force_rmse_eV_per_A": met.get("force_rmse", float("nan"))}
            loss_acc = []
            metrics.write(row)
            improved = score < best_val if tc.select == "best" else np.ones_like(np.asarray(score), bool)
            if np.any(improved):
                if K == 1 or best_weights is None or np.all(improved):
                    best_weights = weights
                else:  # each member keeps its own best epoch
                    best_weights = jax.tree.map(lambda a, b: jnp.where(
                        jnp.asarray(improved).reshape((K,) + (1,) * (a.ndim - 1)), a, b), weights, best_weights)
                best_val = np.where(improved, score, best_val) if K > 1 else score
                best_state = best_weights
        out_of_time = tc.max_time_s > 0 and now >= tc.max_time_s
        while pending and pending[0] <= now:
            if best_weights is None and best_path.exists():  # resumed, not improved since
                best_weights, best_record = saved_best()
            snapshot(pending.pop(0), (ema if use_ema else state) if best_weights is None else best_weights,
                     {"step": step, "epoch": epoch + 1, "best_val": np.asarray(best_val).tolist(), "time_s": now})
        if done or out_of_time or time.perf_counter() - last_save >= tc.checkpoint_every_s:
            if best_state is not None:
                best_record = save(best_path, best_state, None, step, epoch + 1, best_val, now, False)
                best_state, best_saved = None, True
            save(last_path, state, (opt_state, ema) if use_ema else opt_state, step, epoch + 1, best_val, now, True)
            last_save = time.perf_counter()
        if out_of_time and not done:
            stopped_by_time = True
            break
    if bar is not None:
        bar.close()
    if best_state is not None or not best_saved:
        best_weights = best_state if best_state is not None else (ema if use_ema else state)
        best_record = save(best_path, best_weights, None, step, epoch + 1, best_val,
                           time.perf_counter() - t_start, False)

    train_time = time.perf_counter() - t_start
    if R > 1:  # per member, the copy with the best validation score; the checkpoint holds K_out models
        done = ckpt.read_meta(best_path).get("restarts") if best_weights is None else None
        if done:  # selected before: a resumed run that had nothing left to train
            meta_base["restarts"] = done
            best_weights, best_record = saved_best()
        else:
            if best_weights is None:
                best_weights, best_record = saved_best()
            scores = np.asarray(best_val, float).reshape(R, K_out)
            kept = np.argmin(scores, axis=0) * K_out + np.arange(K_out)
            meta_base["restarts"] = {"copies": R, "val_scores": scores.tolist(), "kept": kept.tolist(),
                                     "kept_seeds": (tc.seed + kept).tolist()}
            keep = restart_keep(meta_base["restarts"])
            best_weights = jax.tree.map(lambda a: a[keep], best_weights)
            best_record = dict(best_record, best_val=np.asarray(best_val, float)[keep].tolist())
        K = K_out
        if K == 1:
            meta_base.pop("committee")
        else:
            meta_base["committee"] = K
        if writer:
            ckpt.save(best_path, meta=dict(meta_base, train=best_record), params=best_weights)
    summary = {"steps": step, "epochs": epoch + 1, "train_time_s": train_time,
               "compile_s": compile_s,
               "stopped_by_time": stopped_by_time, "n_train": n_tr, "n_val": len(val_ds),
               "n_parameters": count_parameters(state),
               # the final weights' bytes: equal on every process of a distributed run
               "params_sha256": hashlib.sha256(b"".join(np.asarray(x).tobytes()
                                                        for x in jax.tree.leaves(state))).hexdigest()}
    if tc.refit_shift:
        # re-fit the per-element shifts on the training residuals (float64): the offset
        # drifts while the energy prefactor is small.  The best checkpoint is written once
        # more, with the new shifts (its weights and record unchanged).
        if best_weights is None:  # a resumed run that had nothing left to train
            best_weights, best_record = saved_best()
        delta = refit_delta(best_weights)
        meta_base.update(energy_shift=np.asarray(shift) + delta, energy_shift_refit=True)
        delta = delta if K == 1 else delta[0]
        if K > 1:
            meta_base["calibration"] = calibrate_committee(graphdef, best_weights, stats_j, va_dev, va_labels,
                                                           len(val_ds), tc.batch_size * 4)
        if writer:
            ckpt.save(best_path, meta=dict(meta_base, train=best_record), params=best_weights)
        summary["shift_refit_eV"] = float(np.abs(shift_energy(train_ds.numbers[:1], delta, mcfg.type_map)[0]))
    if not writer:
        return summary
    try:
        learning_curve(read_metrics(out / f"metrics.{tc.metrics_format}"), out / "learning_curve.png",
                       unit=data["report_energy_unit"])
    except Exception as e:  # plotting never loses a run
        log.warning("learning-curve plot failed: %s", e)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def restart_keep(restarts: dict):
    """Indices of the copies kept by ``train.restarts`` (an int for a single model)."""
    kept = np.asarray(restarts["kept"])
    return kept if len(kept) > 1 else int(kept[0])


def _check_warm_start(meta: dict, model_cfg: dict, committee: int, path) -> None:
    """``init_from`` must hold the same model (config, species, committee size)."""
    diff = bundle.config_difference(dict(meta["model"]), model_cfg)
    if diff:
        raise ValueError(f"train.init_from {path}: its model differs in {diff}, there vs here")
    if int(meta.get("committee", 1)) != committee:
        raise ValueError(f"train.init_from {path}: a committee of {meta.get('committee', 1)}, "
                         f"this run trains {committee}")


def _predict_chunks(graphdef, state, stats, inputs, m, chunk, committee=False):
    """Energies (M,) and forces (M, N, 3) in chunks; ``committee``: (K, M), (K, M, N, 3)."""
    es, fs = [], []
    fn = committee_efv if committee else batched_efv
    for start in range(0, m, chunk):
        idx = np.minimum(np.arange(start, start + chunk), m - 1)
        e, f, _ = fn(graphdef, state, stats, jax.tree.map(lambda x: x[idx], inputs))
        k = min(chunk, m - start)
        es.append(np.asarray(e, np.float64)[..., :k])
        fs.append(np.asarray(f, np.float64)[..., :k, :, :])
    return np.concatenate(es, axis=-1), np.concatenate(fs, axis=-3)


def calibrate_committee(graphdef, state, stats, inputs, labels, m, chunk) -> dict:
    r"""One-parameter recalibration of a committee's force uncertainty on validation data.

    Each force component is modelled as Gaussian with mean :math:`\bar F` (committee
    mean) and standard deviation :math:`s\,\sigma`, :math:`\sigma` the committee spread
    (population std over members).  The scale minimising the negative log-likelihood of
    the validation errors :math:`\delta = \bar F - F_{\rm ref}` is
    :math:`s^2 = \langle \delta^2/\sigma^2 \rangle` (closed form).  The validation
    force Spearman correlation (:func:`lrnn.uncertainty.force_spearman`) and force MAE
    (eV/Å, per component) are recorded beside it, for choosing between committees on
    validation data."""
    _, f = _predict_chunks(graphdef, state, stats, inputs, m, chunk, True)
    mask = np.asarray(labels["mask"])
    err_full = f.mean(axis=0) - np.asarray(labels["forces"], np.float64)
    sigma = np.maximum(f.std(axis=0)[mask].ravel(), 1e-12)
    err = err_full[mask].ravel()
    _, d = spread(f, mask)
    return {"force_std_scale": float(np.sqrt(np.mean((err / sigma) ** 2))), "fitted_on": "validation",
            "n_components": int(err.size), "validation_force_mae_eV_A": float(np.mean(np.abs(err))),
            "validation_force_spearman": force_spearman(err_full, d, mask) if m >= 3 else None}
