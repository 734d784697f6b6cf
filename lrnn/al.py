"""Active learning: ``lrnn al CONFIG.yaml``.

Each round (as in DP-GEN's concurrent learning):

1. **train** a committee (``train.committee >= 2``) on every label so far, warm-started
   from the previous round's checkpoint (``train.init_from``);
2. **explore**: Langevin MD (ASE) with the committee at each temperature, seeded from
   random training frames; every ``sample_every`` steps the frame and its model deviation
   :math:`d = \\max_i \\lVert \\sigma(\\mathbf F_i) \\rVert` (eV/Å, committee spread of the
   atomic forces) are recorded.  A trajectory stops at ``stop_deviation`` or when the
   potential refuses a structure (atoms too close);
3. **select** the frames with ``trust_lo <= d < trust_hi``: at most ``max_per_round``,
   spread out by farthest-point sampling of the committee's first member's per-species mean
   descriptors;
4. **label** them with the reference calculator (GFN2-xTB through tblite by default; any
   ASE calculator as ``module:Class``).  Each label is appended to ``labels.extxyz`` and
   fsynced as it is computed; a frame whose calculation fails is logged in
   ``label_failures.jsonl`` and skipped.

With ``trust_relative: true`` the three levels ``trust_lo``, ``trust_hi`` and
``stop_deviation`` are multiples of :math:`\bar d`, the median model deviation of the
round's committee over its own training frames, recomputed every round (the committee's
disagreement on what it has seen sets what counts as "known"; DP-GEN's adaptive trust
level plays the same part).  The absolute levels used are written to ``round.json``.
Warm-started rounds may train ``warm_steps`` steps from ``warm_lr_start`` (DP-GEN's
``training_reuse_numb_steps`` / ``training_reuse_start_lr``); 0 keeps the ``train`` values.

Two baselines share the loop: ``selection: random`` labels frames drawn uniformly from
the explored ones, and ``selection: pool`` skips exploration and draws, without
replacement, from ``al.pool``, frames whose reference labels are already stored (e.g. the
reference's own MD, the distribution a test set comes from); its "labelling" reads them
(:class:`PoolLabels`).  ``selection: pool_deviation`` is query by committee on the same
pool (pool-based active learning, as ANI-1x selected its conformers): no exploration; of the
unused pool frames within the trust window, the ``pool_shortlist × max_per_round`` of
largest model deviation are shortlisted and ``max_per_round`` of them are spread by
farthest-point sampling (from the largest deviation); their labels are read from the pool.

Every stage writes its output atomically under ``OUTPUT/round_XX/``, and a rerun resumes
at the first stage without it; after the last round a final committee is trained on all
labels (``OUTPUT/final``).  ``OUTPUT/al_metrics.csv`` has one row per round (labels so far,
the deviation fractions, and the test errors when ``al.test`` is given).

Config: the ``model``, ``train`` and ``output`` sections of ``lrnn train`` and an ``al``
section (:class:`ALConfig`); the labelled starting set is ``al.initial``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from pathlib import Path

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import yaml
from ase import Atoms
from ase import units as ase_units
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

from lrnn.ase_calculator import LrnnCalculator
from lrnn.data import read
from lrnn.data.readers import from_atoms
from lrnn.evaluate import evaluate
from lrnn.nn import merge
from lrnn.potential import Potential
from lrnn.system import concatenate
from lrnn.train import load_config, train
from lrnn.train.metrics import MetricsWriter

log = logging.getLogger("lrnn.al")


SELECTIONS = ("deviation", "random", "pool", "pool_deviation")
POOL_SELECTIONS = ("pool", "pool_deviation")  # select from al.pool (stored labels) instead of exploring


@dataclasses.dataclass(frozen=True)
class ALConfig:
    """The ``al`` section (temperatures K, time fs, deviations eV/Å)."""

    initial: str  # labelled starting data (a file lrnn reads, e.g. extxyz)
    rounds: int = 5
    val_fraction: float = 0.1
    temperatures_K: tuple = (300.0,)
    trajectories: int = 4  # per temperature and round
    md_steps: int = 1000
    dt_fs: float = 0.5
    friction_per_fs: float = 0.01
    sample_every: int = 10
    trust_lo: float = 0.05
    trust_hi: float = 0.5
    stop_deviation: float = 2.0  # a trajectory stops above this deviation
    max_per_round: int = 20
    reference: dict = dataclasses.field(default_factory=lambda: {"calculator": "xtb"})
    test: str = ""  # optional independent test set, evaluated after every training
    selection: str = "deviation"  # or "random": uniform over all explored frames; "pool", "pool_deviation"
    pool: str = ""  # labelled frames to select from instead of exploring (selection pool / pool_deviation)
    pool_shortlist: int = 4  # pool_deviation: spread max_per_round over this many times as many top frames
    trust_relative: bool = False  # levels as multiples of the median deviation on the training frames
    warm_steps: int = 0  # steps of a warm-started round (0: train.max_steps)
    warm_lr_start: float = 0.0  # its initial learning rate (0: train.lr_start)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "temperatures_K", tuple(float(t) for t in self.temperatures_K))
        if not 0 <= self.trust_lo < self.trust_hi <= self.stop_deviation:
            raise ValueError(f"al: need 0 <= trust_lo < trust_hi <= stop_deviation, got {self.trust_lo}, "
                             f"{self.trust_hi}, {self.stop_deviation} eV/Å")
        if self.rounds < 1 or self.max_per_round < 1 or self.md_steps < 1 or self.sample_every < 1:
            raise ValueError("al: rounds, max_per_round, md_steps and sample_every must be >= 1")
        if self.selection not in SELECTIONS:
            raise ValueError(f"al: selection must be one of {', '.join(map(repr, SELECTIONS))}, "
                             f"got {self.selection!r}")
        if (self.selection in POOL_SELECTIONS) != bool(self.pool):
            raise ValueError(f"al: selection {self.selection!r}: selections 'pool' and 'pool_deviation' need al.pool "
                             "(a labelled file to select from), and al.pool is only used by them")
        if self.pool_shortlist < 1:
            raise ValueError(f"al: pool_shortlist must be >= 1, got {self.pool_shortlist}")
        if self.warm_steps < 0 or self.warm_lr_start < 0:
            raise ValueError(f"al: warm_steps and warm_lr_start must be >= 0, got {self.warm_steps}, "
                             f"{self.warm_lr_start}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"al: val_fraction must be in (0, 1), got {self.val_fraction}")


def load_al_config(path_or_dict) -> tuple[ALConfig, dict]:
    """``(ALConfig, run config)`` from a YAML file or dict with ``al``, ``model``, ``train``,
    ``output`` sections."""
    if isinstance(path_or_dict, dict):
        raw, base = dict(path_or_dict), Path.cwd()
    else:
        p = Path(path_or_dict)
        if not p.exists():
            raise FileNotFoundError(f"config file not found: {p}")
        raw, base = yaml.safe_load(p.read_text()) or {}, p.parent
    if "al" not in raw:
        raise ValueError("an active-learning config needs an 'al' section (with al.initial, the labelled data)")
    al_raw = dict(raw.pop("al"))
    fields = {f.name for f in dataclasses.fields(ALConfig)}
    bad = set(al_raw) - fields
    if bad:
        raise ValueError(f"config: unknown al option(s) {sorted(bad)}; known: {sorted(fields)}")
    for k in ("initial", "test", "pool"):
        if al_raw.get(k) and not Path(al_raw[k]).is_absolute():
            al_raw[k] = str(base / al_raw[k])
    al = ALConfig(**al_raw)
    run = load_config(dict(raw, data={"train": al.initial}))
    if run["train"].committee < 2:
        raise ValueError("active learning needs train.committee >= 2: the model deviation is the committee's spread")
    return al, run


def reference_calculator(spec: dict):
    """The labelling calculator: ``{"calculator": "xtb"}`` (GFN2-xTB, tblite) or
    ``{"calculator": "module:Class", "kwargs": {...}}`` for any ASE calculator."""
    name, kwargs = spec.get("calculator", "xtb"), dict(spec.get("kwargs", {}))
    if name == "xtb":
        try:
            from tblite.ase import TBLite
        except ImportError as e:
            raise ImportError("the default reference is GFN2-xTB through tblite: pip install tblite") from e
        return TBLite(**{"method": "GFN2-xTB", "verbosity": 0, **kwargs})
    if ":" not in name:
        raise ValueError(f"al.reference.calculator must be 'xtb' or 'module:Class', got {name!r}")
    mod, cls = name.split(":", 1)
    return getattr(importlib.import_module(mod), cls)(**kwargs)


class PoolLabels(Calculator):
    """The reference labels already stored with a frame pool: the energy (eV) and forces
    (eV/Å) of ``frames[atoms.info["pool_index"]]``, refusing a frame whose positions differ."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, frames: list):
        super().__init__()
        self.frames = frames

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        ref = self.frames[int(self.atoms.info["pool_index"])]
        if len(ref) != len(self.atoms) or not np.allclose(ref.positions, self.atoms.positions, atol=1e-8):
            raise ValueError(f"pool frame {self.atoms.info['pool_index']}: positions differ from the pool's")
        self.results = {"energy": float(ref.get_potential_energy()), "forces": np.asarray(ref.get_forces())}


def _unlabelled(pool: list, idx) -> list:
    """Copies of ``pool[i]`` without labels, each with ``info["pool_index"] = i``."""
    out = []
    for i in idx:
        a = Atoms(numbers=pool[i].numbers, positions=pool[i].positions, cell=pool[i].cell, pbc=pool[i].pbc)
        a.info["pool_index"] = int(i)
        out.append(a)
    return out


def select_from_pool(pool: list, used: set, al: ALConfig, rng: np.random.Generator) -> list:
    """``max_per_round`` frames of ``pool`` not in ``used`` (pool indices), uniformly,
    unlabelled copies with ``info["pool_index"]``."""
    rest = np.array([i for i in range(len(pool)) if i not in used], int)
    return _unlabelled(pool, np.sort(rng.permutation(rest)[:al.max_per_round]))


def query_pool(pot: Potential, pool: list, used: set, al: ALConfig) -> tuple[list, np.ndarray]:
    """Query by committee on a pool (``selection: pool_deviation``): of the frames not in
    ``used`` whose model deviation d satisfies ``trust_lo <= d < trust_hi`` (``al``'s levels in
    eV/Å), the ``pool_shortlist * max_per_round`` of largest d, of which ``max_per_round``
    spread by farthest-point sampling from the largest; unlabelled copies with
    ``info["pool_index"]`` and ``info["model_deviation"]``.  Also returns the deviations of
    every unused frame (for the round's record)."""
    rest = [i for i in range(len(pool)) if i not in used]
    cands = _unlabelled(pool, rest)
    dev = model_deviations(pot, cands)
    for a, d in zip(cands, dev):
        a.info["model_deviation"] = float(d)
    inside = [k for k in np.argsort(-dev, kind="stable") if al.trust_lo <= dev[k] < al.trust_hi]
    short = [cands[k] for k in inside[:al.pool_shortlist * al.max_per_round]]
    if len(short) <= al.max_per_round:
        return short, dev
    return [short[i] for i in farthest_point_sampling(structure_features(pot, short), al.max_per_round, 0)], dev


def _write_atomic(path: Path, frames) -> None:
    tmp = path.with_name(path.name + ".tmp")
    ase.io.write(tmp, frames, format="extxyz") if frames else tmp.write_text("")
    os.replace(tmp, path)


def _read_frames(path: Path) -> list:
    return [] if not path.exists() or path.stat().st_size == 0 else ase.io.read(path, ":", format="extxyz")


def _to_atoms(ds, k):
    n = int(ds.n_atoms[k])
    return Atoms(numbers=ds.numbers[k, :n], positions=ds.positions[k, :n],
                 cell=ds.cell[k] if ds.pbc[k].any() else None, pbc=ds.pbc[k])


def explore(pot: Potential, seeds: list, al: ALConfig, rng: np.random.Generator) -> list:
    """Committee MD from each seed frame at each temperature; the sampled frames with
    ``info["model_deviation"]`` (eV/Å), ``info["temperature_K"]`` and ``info["md_step"]``."""
    calc = LrnnCalculator(pot)
    out = []
    for t in al.temperatures_K:
        for _ in range(al.trajectories):
            atoms = seeds[int(rng.integers(len(seeds)))].copy()
            atoms.set_constraint(FixCom())
            atoms.calc = calc
            MaxwellBoltzmannDistribution(atoms, temperature_K=t, rng=rng)
            Stationary(atoms)
            ZeroRotation(atoms)
            dyn = Langevin(atoms, al.dt_fs * ase_units.fs, temperature_K=t,
                           friction=al.friction_per_fs / ase_units.fs, fixcm=False, rng=rng)
            for step in range(al.sample_every, al.md_steps + 1, al.sample_every):
                try:
                    dyn.run(al.sample_every)
                    dev = float(calc.results["model_deviation"])
                except (ValueError, FloatingPointError) as e:  # e.g. atoms too close: the run left physics
                    log.info("trajectory at %.0f K stopped at step %d: %s", t, step, e)
                    break
                frame = atoms.copy()
                frame.calc = None
                frame.set_constraint()  # labels are the reference's forces, not FixCom's projection
                frame.info.update(model_deviation=dev, temperature_K=t, md_step=step)
                out.append(frame)
                if dev >= al.stop_deviation:
                    break
    return out


def structure_features(pot: Potential, frames: list) -> np.ndarray:
    """Per frame: the per-species means of the first committee member's descriptors
    (concatenated; zeros for species absent), the space farthest-point sampling spreads in."""
    state = pot.state if pot.committee == 1 else jax.tree.map(lambda x: x[0], pot.state)
    module = merge(pot.graphdef, state)
    desc_fn = jax.jit(lambda inputs: [None if d is None else jnp.sum(jnp.where(d[1][:, None], d[0], 0.0), 0)
                                      / jnp.maximum(jnp.sum(d[1]), 1)
                                      for d in module.descriptors(inputs, pot.stats)])
    feats = []
    for a in frames:
        ds = pot._dataset(a.positions, a.numbers, a.cell.array if a.pbc.any() else None, a.pbc, None)
        inputs = jax.tree.map(lambda x: jnp.asarray(x[0]), pot._inputs(ds, np.dtype(pot.dtype)))
        inputs = inputs.with_plans(pot.plans_for(a.positions, a.cell.array if a.pbc.any() else None))
        feats.append(np.concatenate([np.zeros(0) if d is None else np.asarray(d, np.float64)
                                     for d in desc_fn(inputs)]))
    return np.stack(feats)


def farthest_point_sampling(x: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """Indices of ``k`` rows of ``x``: start at ``first``, then repeatedly the row farthest
    (Euclidean) from those chosen."""
    k = min(k, len(x))
    chosen = [first]
    dist = np.linalg.norm(x - x[first], axis=1)
    for _ in range(k - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(x - x[chosen[-1]], axis=1))
    return np.asarray(chosen)


def select(pot: Potential, candidates: list, al: ALConfig, rng: np.random.Generator) -> list:
    """Candidates with ``trust_lo <= deviation < trust_hi``, at most ``max_per_round``
    spread by farthest-point sampling (starting from the largest deviation); with
    ``selection: random``, ``max_per_round`` of all candidates drawn uniformly."""
    if al.selection == "random":
        keep = np.sort(rng.permutation(len(candidates))[:al.max_per_round])
        return [candidates[i] for i in keep]
    pool = [a for a in candidates if al.trust_lo <= a.info["model_deviation"] < al.trust_hi]
    if len(pool) <= al.max_per_round:
        return pool
    first = int(np.argmax([a.info["model_deviation"] for a in pool]))
    return [pool[i] for i in farthest_point_sampling(structure_features(pot, pool), al.max_per_round, first)]


def label(frames: list, calc, labels_path: Path, failures_path: Path, round_index: int) -> dict:
    """Label the frames not yet in ``labels_path`` (resumable): each label appended and
    fsynced as computed; failures logged and skipped."""
    done = {a.info.get("al_index") for a in _read_frames(labels_path) if a.info.get("al_round") == round_index}
    failed = set()
    if failures_path.exists():
        for line in failures_path.read_text().splitlines():
            rec = json.loads(line)
            if rec["round"] == round_index:
                failed.add(rec["index"])
    n_new = n_fail = 0
    for i, a in enumerate(frames):
        if i in done or i in failed:
            continue
        atoms = a.copy()
        atoms.calc = calc
        try:
            e, f = float(atoms.get_potential_energy()), np.asarray(atoms.get_forces())
            if not (np.isfinite(e) and np.all(np.isfinite(f))):
                raise FloatingPointError("non-finite energy or forces")
        except Exception as err:  # any failure of the reference: log it, skip the frame
            with open(failures_path, "a") as fh:
                fh.write(json.dumps({"round": round_index, "index": i, "error": f"{type(err).__name__}: {err}"}) + "\n")
            n_fail += 1
            continue
        out = a.copy()
        out.calc = None
        out.info.update(energy=e, al_round=round_index, al_index=i)
        out.arrays["forces"] = f
        with open(labels_path, "a") as fh:
            ase.io.write(fh, out, format="extxyz")
            fh.flush()
            os.fsync(fh.fileno())
        n_new += 1
    return {"labelled": n_new + len(done), "failed": n_fail + len(failed)}


def _dataset_so_far(al: ALConfig, labels_path: Path):
    ds = read(al.initial)
    extra = _read_frames(labels_path)
    if extra:
        ds = concatenate([ds, from_atoms(extra, name="al labels")], name="al data")
    return ds


def _train_round(al: ALConfig, run: dict, ds, out: Path, warm: Path | None, seed: int) -> Path:
    ckpt = out / "checkpoint"
    if (out / "done").exists():
        return ckpt
    perm = np.random.default_rng([al.seed, seed]).permutation(len(ds))
    n_val = max(1, int(round(al.val_fraction * len(ds))))
    tc = dataclasses.replace(run["train"], init_from=str(warm) if warm else "")
    if warm and al.warm_steps:
        tc = dataclasses.replace(tc, max_steps=al.warm_steps)
    if warm and al.warm_lr_start:
        tc = dataclasses.replace(tc, lr_start=al.warm_lr_start, lr_stop=min(tc.lr_stop, al.warm_lr_start))
    cfg = dict(run, output=str(out), train=tc)
    train(cfg, quiet=True, datasets={"train": ds.subset(perm[n_val:]), "val": ds.subset(perm[:n_val])})
    (out / "done").write_text("")
    return ckpt


def trust_levels(al: ALConfig, train_deviations) -> ALConfig:
    """``al`` with absolute trust levels (eV/Å): unchanged unless ``al.trust_relative``, then
    ``trust_lo``, ``trust_hi`` and ``stop_deviation`` times the median of
    ``train_deviations`` (the committee's model deviation on its training frames)."""
    if not al.trust_relative:
        return al
    d = np.asarray(train_deviations, np.float64)
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError("trust_relative needs finite model deviations on at least one training frame")
    m = float(np.median(d))
    return dataclasses.replace(al, trust_lo=al.trust_lo * m, trust_hi=al.trust_hi * m,
                               stop_deviation=al.stop_deviation * m, trust_relative=False)


def model_deviations(pot: Potential, frames: list) -> np.ndarray:
    """The committee's model deviation (eV/Å) on each frame."""
    calc = LrnnCalculator(pot)
    out = []
    for a in frames:
        a = a.copy()
        a.calc = calc
        a.get_potential_energy()
        out.append(float(calc.results["model_deviation"]))
    return np.asarray(out)


def run_al(al: ALConfig, run: dict, rounds: int | None = None, on_round=None) -> list[dict]:
    """The active-learning loop (see module docstring); returns the per-round records.
    ``on_round(record)``, if given, is called after each round's record is on disk (rounds
    finished before a resume included), e.g. to keep a copy of the run elsewhere."""
    out = Path(run["output"])
    out.mkdir(parents=True, exist_ok=True)
    labels_path, failures_path = out / "labels.extxyz", out / "label_failures.jsonl"
    calc = pool = None
    records, warm = [], None
    n_rounds = al.rounds if rounds is None else rounds
    metrics = MetricsWriter(out / "al_metrics.csv", "csv", resume=True)
    for r in range(n_rounds + 1):
        rd = out / ("final" if r == n_rounds else f"round_{r:02d}")
        rec_path = rd / "round.json"
        if rec_path.exists():
            rec = json.loads(rec_path.read_text())
            records.append(rec)
            warm = Path(rec["checkpoint"])
            if on_round is not None:
                on_round(rec)
            continue
        ds = _dataset_so_far(al, labels_path)
        ckpt = _train_round(al, run, ds, rd / "model", warm, r)
        warm = ckpt
        rec = {"round": r, "n_labels": len(ds), "checkpoint": str(ckpt)}
        if al.test:
            res = evaluate(ckpt, al.test, unit="eV")
            rec.update(test_energy_mae_eV=res["energy_mae"], test_force_mae_eV_per_A=res["force_mae"])
        if r < n_rounds and al.selection in POOL_SELECTIONS:  # no exploration, stored labels
            rng = np.random.default_rng([al.seed, r])
            sel_path = rd / "selected.extxyz"
            pool = pool if pool is not None else _read_frames(Path(al.pool))
            used = {int(a.info["pool_index"]) for a in _read_frames(labels_path)}
            if not sel_path.exists() and al.selection == "pool":  # the passive baseline
                _write_atomic(sel_path, select_from_pool(pool, used, al, rng))
            elif not sel_path.exists():  # query by committee
                pot = Potential.from_checkpoint(ckpt)
                lv = trust_levels(al, model_deviations(pot, [_to_atoms(ds, k) for k in range(len(ds))])
                                  if al.trust_relative else ())
                chosen, dev = query_pool(pot, pool, used, lv)
                rec.update(trust_lo=lv.trust_lo, trust_hi=lv.trust_hi, median_pool_deviation=float(np.median(dev)),
                           frac_candidate=float(np.mean((dev >= lv.trust_lo) & (dev < lv.trust_hi))))
                _write_atomic(sel_path, chosen)
            chosen = _read_frames(sel_path)
            lab = label(chosen, PoolLabels(pool), labels_path, failures_path, r)
            rec.update(n_candidates=len(pool) - len(used), n_selected=len(chosen), **lab)
        elif r < n_rounds:
            pot = Potential.from_checkpoint(ckpt)
            rng = np.random.default_rng([al.seed, r])
            cand_path, sel_path = rd / "candidates.extxyz", rd / "selected.extxyz"
            seeds = [_to_atoms(ds, k) for k in range(len(ds))]
            lv = trust_levels(al, model_deviations(pot, seeds) if al.trust_relative else ())
            if al.trust_relative:
                rec.update(trust_lo=lv.trust_lo, trust_hi=lv.trust_hi, stop_deviation=lv.stop_deviation)
            if not cand_path.exists():
                _write_atomic(cand_path, explore(pot, seeds, lv, rng))
            cands = _read_frames(cand_path)
            if not sel_path.exists():
                _write_atomic(sel_path, select(pot, cands, lv, rng))
            chosen = _read_frames(sel_path)
            calc = calc or reference_calculator(al.reference)
            lab = label(chosen, calc, labels_path, failures_path, r)
            dev = np.array([a.info["model_deviation"] for a in cands]) if cands else np.zeros(0)
            rec.update(n_candidates=len(cands), n_selected=len(chosen), **lab,
                       frac_accurate=float(np.mean(dev < lv.trust_lo)) if len(dev) else None,
                       frac_candidate=float(np.mean((dev >= lv.trust_lo) & (dev < lv.trust_hi))) if len(dev) else None,
                       frac_failed=float(np.mean(dev >= lv.trust_hi)) if len(dev) else None)
        tmp = rec_path.with_name("round.json.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, rec_path)
        metrics.write(rec)
        records.append(rec)
        if on_round is not None:
            on_round(rec)
        log.info("al round %s: %s", r, rec)
    return records
