"""Run configuration (YAML): data, model and training sections, validated up front."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml


@dataclasses.dataclass
class TrainConfig:
    """Optimiser, schedule and loop settings.

    The learning rate decays exponentially from ``lr_start`` to ``lr_stop`` over
    ``max_steps`` in stages of ``decay_steps`` (DeePMD style), or continuously over the
    wall-clock budget ``max_time_s`` with ``schedule: time`` (for runs sized by time, e.g.
    the demo; resume is then exact only up to timing); each loss prefactor follows
    ``p(t) = p_limit + (p_start - p_limit) * lr(t) / lr_start``.  ``pref_q`` (constant)
    weighs the mean-square error of the latent charges against reference atomic charges
    (e²), where the dataset has them and the model has a latent-charge term.  ``committee:
    K`` trains K models at once (:mod:`lrnn.train.trainer`).  ``devices`` shards every batch
    over a ``data`` mesh axis of that many local devices (parameters and optimiser state
    replicated); a batch that does not divide evenly is padded with structures of weight 0,
    so losses stay means over real structures.  ``init_from`` (a checkpoint of the same model
    config and committee size) warm-starts: its weights, descriptor statistics and energy
    shifts are the starting point (a fresh optimiser; active learning's retraining).
    ``restarts: R`` trains R copies of each model (of each committee member g: seeds
    ``seed + g + K r``, r < R; a copy shares its member's data subset) in the same vmap,
    and keeps, per member, the copy with the best validation score (the score that
    ``select`` uses); R times the cost, against unlucky initialisations.
    ``select``: ``best`` keeps each model's (each member's) best epoch by the validation
    score; ``last`` keeps the final weights of a fixed schedule (validation then only
    reports), for validation sets too small to rank epochs.
    ``ema_decay: d`` (MACE's ``--ema``) validates and checkpoints an exponential moving
    average of the weights, ``w̄ ← d_n w̄ + (1 - d_n) w`` after step n with the warm-up
    ``d_n = min(d, (1 + n) / (10 + n))``; the optimiser steps the raw weights (``last``
    holds both, so a resume is exact).  ``stage2_from: s`` (MACE's second stage) holds the
    energy and force prefactors at ``stage2_pref_e`` and ``stage2_pref_f`` once a fraction
    s of the budget (``max_time_s`` or ``max_steps``) has passed; validation then scores
    every epoch with those prefactors.  ``committee_nll: λ`` (K > 1) adds λ times the
    committee's force NLL (:func:`lrnn.train.trainer.committee_force_nll`) to the members'
    summed loss: the spread is fitted to the committee mean's error, the mean left to the
    members' own losses (the shallow ensembles of Kellner & Ceriotti, Mach. Learn.: Sci.
    Technol. 5, 035006 (2024), trained with an NLL; here on a deep committee);
    ``committee_nll_floor`` (eV/Å) keeps components on which the members agree from
    dominating it."""

    seed: int = 0
    batch_size: int = 8
    max_steps: int = 20000
    max_epochs: int = 100000
    max_time_s: float = 0.0  # 0 = no wall-clock limit
    schedule: str = "steps"  # decay lr over max_steps, or over max_time_s ("time")
    lr_start: float = 1e-3
    lr_stop: float = 1e-4
    decay_steps: int = 500
    pref_e_start: float = 0.02
    pref_e_limit: float = 1.0
    pref_f_start: float = 1000.0
    pref_f_limit: float = 1.0
    pref_v_start: float = 0.0
    pref_v_limit: float = 0.0
    pref_q: float = 0.0  # weight of the reference-charge loss (e²), for datasets with atomic charges
    dtype: str = "float32"
    val_every_steps: int = 0  # 0 = every epoch; N: at the end of each epoch that reaches a multiple of N, and the last
    checkpoint_every_s: float = 30.0
    metrics_format: str = "csv"  # csv or jsonl
    refit_shift: bool = True
    progress: bool = True
    committee: int = 1  # K > 1: train K models (seeds seed..seed+K-1) at once, one vmap over stacked weights
    committee_subset: float = 1.0  # < 1: each member trains on its own random fraction of the training set
    committee_nll: float = 0.0  # > 0 (K > 1): weight of the committee's force NLL in the loss
    committee_nll_floor: float = 0.01  # eV/Å: the NLL reads a spread σ as sqrt(σ² + floor²)
    restarts: int = 1  # R > 1: each model (member) is the best on validation of R copies from other seeds
    devices: object = "auto"  # data-parallel over this many local devices ("auto": all visible)
    init_from: str = ""  # warm start: weights, descriptor statistics and shifts of this checkpoint
    # learning curves against wall time: the best checkpoint so far (shift re-fitted) is also
    # written to OUTPUT/checkpoint_at_{T}s at the first validation after T seconds of training
    snapshot_at_s: tuple = ()
    select: str = "best"  # the checkpoint: best epoch on validation, or the last one
    ema_decay: float = 0.0  # > 0: validate and keep a moving average of the weights
    stage2_from: float = 0.0  # > 0: fraction of the budget after which the stage-2 prefactors hold
    stage2_pref_e: float = 0.0
    stage2_pref_f: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):  # PyYAML reads 1e-4 (no dot) as a string
            val = getattr(self, f.name)
            if f.type in ("float", "int") and isinstance(val, str):
                try:
                    num = float(val)
                except ValueError:
                    raise ValueError(f"train.{f.name} must be a number, got {val!r}") from None
                if f.type == "int" and not num.is_integer():
                    raise ValueError(f"train.{f.name} must be an integer, got {val!r}")
                setattr(self, f.name, int(num) if f.type == "int" else num)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (0 < self.lr_stop <= self.lr_start):
            raise ValueError(f"need 0 < lr_stop <= lr_start, got {self.lr_stop}, {self.lr_start}")
        for k in ("pref_e_start", "pref_e_limit", "pref_f_start", "pref_f_limit", "pref_v_start", "pref_v_limit",
                  "pref_q"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0")
        if self.schedule not in ("steps", "time"):
            raise ValueError(f"schedule must be 'steps' or 'time', got {self.schedule!r}")
        if self.schedule == "time" and self.max_time_s <= 0:
            raise ValueError("schedule: time needs max_time_s > 0 (the budget over which the lr decays)")
        if int(self.committee) != self.committee or self.committee < 1:
            raise ValueError(f"committee must be an integer >= 1 (models trained together), got {self.committee}")
        if int(self.restarts) != self.restarts or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1 (copies per model), got {self.restarts}")
        if self.restarts > 1 and self.init_from:
            raise ValueError("restarts > 1 with init_from: a warm start has one set of weights per model")
        if not 0 < self.committee_subset <= 1:
            raise ValueError(f"committee_subset must be in (0, 1], got {self.committee_subset}")
        if self.committee_nll < 0:
            raise ValueError(f"committee_nll must be >= 0 (the weight of the committee's force NLL), "
                             f"got {self.committee_nll}")
        if self.committee_nll_floor <= 0:
            raise ValueError(f"committee_nll_floor must be > 0 eV/Å, got {self.committee_nll_floor}")
        if self.committee_nll > 0 and (self.committee < 2 or self.restarts > 1):
            raise ValueError(f"committee_nll > 0 needs a committee (committee >= 2, got {self.committee}) "
                             f"trained without restarts (got {self.restarts}): the NLL couples the members")
        if self.committee_nll > 0 and not self.uses_forces:
            raise ValueError("committee_nll > 0 needs force labels in the loss (pref_f_start or pref_f_limit > 0): "
                             "it is the committee's force NLL")
        if not (self.devices == "auto" or (isinstance(self.devices, int) and self.devices >= 1)):
            raise ValueError(f"devices must be 'auto' or an integer >= 1, got {self.devices!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        snaps = self.snapshot_at_s
        self.snapshot_at_s = tuple(sorted(float(t) for t in (snaps if isinstance(snaps, (list, tuple)) else [snaps])))
        if any(t <= 0 for t in self.snapshot_at_s):
            raise ValueError(f"snapshot_at_s: times must be > 0 s, got {list(self.snapshot_at_s)}")
        if self.val_every_steps < 0:
            raise ValueError(f"val_every_steps must be >= 0 (0: every epoch), got {self.val_every_steps}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {self.select!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no moving average), got {self.ema_decay}")
        if not 0 <= self.stage2_from < 1:
            raise ValueError(f"stage2_from must be in [0, 1) (a fraction of the budget; 0: no second stage), "
                             f"got {self.stage2_from}")
        if self.stage2_pref_e < 0 or self.stage2_pref_f < 0:
            raise ValueError("stage2_pref_e and stage2_pref_f must be >= 0")
        if self.stage2_from > 0 and self.stage2_pref_e + self.stage2_pref_f == 0:
            raise ValueError("stage2_from > 0 needs stage2_pref_e or stage2_pref_f > 0 (the second stage's loss weights)")
        if self.metrics_format not in ("csv", "jsonl"):
            raise ValueError(f"metrics_format must be csv or jsonl, got {self.metrics_format!r}")

    @property
    def uses_forces(self) -> bool:
        return self.pref_f_start > 0 or self.pref_f_limit > 0 or (self.stage2_from > 0 and self.stage2_pref_f > 0)

    @property
    def uses_virial(self) -> bool:
        return self.pref_v_start > 0 or self.pref_v_limit > 0


DATA_KEYS = {"train", "test", "format", "n_train", "n_val", "n_test", "seed", "energy_unit", "length_unit",
             "report_energy_unit", "test_format", "total_charge"}


def load_config(path_or_dict) -> dict:
    """Read a YAML run config and check its sections; returns a dict with ``data``,
    ``model`` (dict), ``train`` (:class:`TrainConfig`), ``output`` (path)."""
    if isinstance(path_or_dict, dict):
        raw, base = path_or_dict, Path.cwd()
    else:
        p = Path(path_or_dict)
        if not p.exists():
            raise FileNotFoundError(f"config file not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
        base = p.parent
    unknown = set(raw) - {"data", "model", "train", "output"}
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; expected data, model, train, output")
    data = dict(raw.get("data") or {})
    if "train" not in data:
        raise ValueError("config: data.train (a data file, or 'embedded:paracetamol') is required")
    bad = set(data) - DATA_KEYS
    if bad:
        raise ValueError(f"config: unknown data option(s) {sorted(bad)}; known: {sorted(DATA_KEYS)}")
    tr = raw.get("train") or {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = set(tr) - fields
    if bad:
        raise ValueError(f"config: unknown train option(s) {sorted(bad)}; known: {sorted(fields)}")
    out = raw.get("output", "runs/run")
    return {"data": data, "model": dict(raw.get("model") or {}), "train": TrainConfig(**tr),
            "output": str(out), "base": str(base)}
