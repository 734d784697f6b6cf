"""Cost of each long-range term at N ≈ 3,000 atoms (and larger N): energy+forces time of
the local DeepPot-SE model alone and with each term added, median of repeats after compile.

System: a free cluster of water-like O/H at liquid density (random positions, O–H pairs
0.97 Å apart, no atoms closer than 0.9 Å); parameters random (timing only).  Terms with
``method: fmm`` get the FMM plan the :class:`lrnn.potential.Potential` would build (order
``fmm_order``, leaves wide enough for the near-field kernel, 10 % skin); the plan build
(NumPy, once per re-plan) and the O(N) leaf check (every call) are timed separately.
Usage: python experiments/longrange/bench_terms.py [--n 3000 12000] [--repeats 5]
Writes experiments/results/longrange/bench_terms.{md,json}.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrnn import models
from lrnn.batch import make_inputs
from lrnn.nn import split
from lrnn.potential import energy_forces_virial
from lrnn.system import Dataset

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "longrange"
VARIANTS = {
    "local": {},
    "far_field": {"far_field": {"r_on": 4.0, "r_off": 5.0}},
    "far_field (fmm)": {"far_field": {"r_on": 4.0, "r_off": 5.0, "method": "fmm"}},
    "latent_coulomb": {"long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [16]}]},
    "latent_coulomb (fmm)": {"long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [16], "method": "fmm"}]},
    "sog": {"long_range": [{"type": "sog", "n_gaussians": 8, "fit": [16]}]},
    "sog (hierarchical)": {"long_range": [{"type": "sog", "n_gaussians": 8, "fit": [16], "method": "hierarchical"}]},
    "dispersion": {"long_range": [{"type": "dispersion", "r_on": 12.0, "r_off": 15.0}]},
}


def water_cluster(n_atoms, seed=0):
    rng = np.random.default_rng(seed)
    n_mol = n_atoms // 3
    side = (n_mol * 30.0) ** (1 / 3)  # ~30 Å^3 per molecule
    pos = []
    from scipy.spatial import cKDTree

    while len(pos) < 3 * n_mol:
        o = rng.uniform(0, side, 3)
        u = rng.normal(size=(2, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        trial = np.vstack([o, o + 0.97 * u[0], o + 0.97 * u[1]])
        if np.linalg.norm(trial[1] - trial[2]) < 1.2:
            continue
        if pos and cKDTree(np.array(pos)).query(trial, k=1)[0].min() < 1.6:
            continue
        pos.extend(trial)
    return np.array(pos), np.array([8, 1, 1] * n_mol)


def bench_n(n, repeats, only=None):
    from lrnn import fmm
    from lrnn.plans import FMM_SKIN

    pos, num = water_cluster(n)
    base = {"type": "deeppot_se", "type_map": [1, 8], "rcut": 5.0, "rcut_smth": 0.5, "embed": [16, 32, 64],
            "axis_neurons": 8, "fit": [128, 128, 128], "neighbor_mode": "cutoff"}
    stats = {"s_avg": jnp.full(2, 0.2), "s_std": jnp.full(2, 0.3), "dir_std": jnp.full(2, 0.2), "n_norm": 40.0}
    rows = {}
    for name, extra in VARIANTS.items():
        if only and name not in only:
            continue
        cfg = dict(base, **extra)
        g, st = split(models.create(cfg))
        _, mcfg = models.model_config(cfg)
        inp, _ = make_inputs(Dataset(pos[None], num[None], [0.0]), mcfg)
        inp = jax.tree.map(lambda x: jnp.asarray(x[0]), inp)
        row = {}
        side = mcfg.fmm_leaf_side()
        if side is not None:
            t0 = time.perf_counter()
            plan = fmm.plan(pos, order=mcfg.fmm_order, min_leaf_side=side / (1 - FMM_SKIN), tol=FMM_SKIN)
            row["plan_s"] = time.perf_counter() - t0
            row["plan"] = {k: v for k, v in plan.summary().items() if k != "n_boxes"}
            row["leaf_side_A"] = float(plan.leaf_side)
            fmm.needs_replan(plan, pos)
            t0 = time.perf_counter()
            fmm.needs_replan(plan, pos)
            row["check_s"] = time.perf_counter() - t0
            inp = replace(inp, fmm_plan=plan)
        k_sog = mcfg.hierarchical_sog_term()
        if k_sog is not None:
            from flax import nnx

            from lrnn.longrange import sog

            widths = np.exp(np.asarray(getattr(nnx.merge(g, st), f"term{k_sog}").log_width[...], np.float64))
            t0 = time.perf_counter()
            splan = sog.sog_plan(pos, widths)
            row["plan_s"] = time.perf_counter() - t0
            row["sog_plan"] = splan.summary()
            inp = replace(inp, sog_plan=splan)
        fn = jax.jit(energy_forces_virial, static_argnums=0)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(g, st, stats, inp))
        row["compile_s"] = time.perf_counter() - t0
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(g, st, stats, inp))
            ts.append(time.perf_counter() - t0)
        row["median_s"] = float(np.median(ts))
        rows[name] = row
        print(n, name, row, flush=True)
    return rows


def relative(rows):
    for r in rows.values():
        r["relative_to_local"] = r["median_s"] / rows["local"]["median_s"]
    return rows


def write_md(info, ns, repeats):
    """The table of bench_terms.json as markdown (the crossover sentence from the data)."""
    res = info["by_n_atoms"]
    md = ["# Energy+forces cost of each term (free water-like cluster)", "",
          f"Command: `python experiments/longrange/bench_terms.py --n {' '.join(map(str, ns))}`; "
          f"{info['device']}, float32, median of {repeats} after compile.", "",
          "| model | " + " | ".join(f"N = {n}: time (s) | relative to local" for n in ns) + " |",
          "|---" * (1 + 2 * len(ns)) + "|"]
    for k in VARIANTS:
        md.append(f"| {k} | " + " | ".join(f"{res[str(n)][k]['median_s']:.3f} | "
                                           f"{res[str(n)][k]['relative_to_local']:.2f}x" for n in ns) + " |")
    md += ["", "FMM plans (built once per re-plan in NumPy; checked every call in O(N)):", ""]
    for n in ns:
        for k, r in res[str(n)].items():
            if "sog_plan" in r:
                sp = r["sog_plan"]
                md.append(f"- N = {n}, {k}: pair list for s = {', '.join(f'{v:.2f}' for v in sp['direct_widths_A'])} Å "
                          f"({sp['n_pairs']} pairs), grids " + ", ".join(
                              f"{'×'.join(map(str, lv['shape']))} (h {lv['h_A']:.2f} Å, s = "
                              f"{', '.join(f'{v:.1f}' for v in lv['widths_A']) or '–'})" for lv in sp["levels"])
                          + f"; plan {r['plan_s'] * 1e3:.0f} ms")
            if "plan" in r:
                md.append(f"- N = {n}, {k}: depth {r['plan']['depth']}, leaf side {r['leaf_side_A']:.1f} Å, "
                          f"order {r['plan']['order']}; plan {r['plan_s'] * 1e3:.0f} ms, "
                          f"leaf check {r['check_s'] * 1e3:.1f} ms")
    speed = []
    for n in ns:
        r = res[str(n)]
        ratios = [r[k]["median_s"] / r[f"{k} (fmm)"]["median_s"] for k in ("far_field", "latent_coulomb")]
        speed.append(f"N = {n}: exact/FMM time {ratios[0]:.2f} (far field), {ratios[1]:.2f} (latent Coulomb)")
    md += ["", "Rows without (fmm) use exact O(N²) sums in row tiles; the dispersion term is a cut-off pair "
           "sum (r_off 15 Å) evaluated over all pairs.  The FMM rows are timed with a plan at both sizes. "
           "Crossover: " + "; ".join(speed) + ".  A model's `fmm_min_atoms` defaults to 5000 (the FMM "
           "gains nothing at 3000 atoms), so at N = 3000 the fmm-method terms run the exact sums (the rows "
           "without (fmm)).  `sog (hierarchical)` is the O(N) open-boundary SOG "
           "(`lrnn.longrange.sog.sog_hierarchical`, tol 1e-6: narrow Gaussians on a pair list, wider ones "
           "on a dyadic grid hierarchy) timed with its plan; `sog` is the exact O(N²) sum."]
    merged = sorted({k for n in ns for k, r in res[str(n)].items() if r.get("merged_run")})
    if merged:
        md += ["", f"Rows {', '.join(merged)} were timed in a later run (`--only`), each relative to the "
                   "local model timed in that run."]
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, nargs="+", default=[3000, 12000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--report", action="store_true", help="only rewrite the .md from the .json")
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS),
                    help="time only these variants (with local) and merge them into the existing .json")
    a = ap.parse_args()
    if a.report:
        info = json.loads((OUT / "bench_terms.json").read_text())
        ns = [int(n) for n in info["by_n_atoms"]]
        (OUT / "bench_terms.md").write_text(write_md(info, ns, info.get("repeats", a.repeats)))
        return
    only = None if a.only is None else set(a.only) | {"local"}
    res = {str(n): bench_n(n, a.repeats, only) for n in a.n}
    res = {n: relative(r) for n, r in res.items()}
    if only:  # the new rows, each relative to the local model timed in the same run
        old = json.loads((OUT / "bench_terms.json").read_text())["by_n_atoms"]
        res = {n: dict(old[n], **{k: dict(v, merged_run=True) for k, v in r.items() if k != "local"})
               for n, r in res.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    info = {"device": str(jax.devices()[0]), "dtype": "float32", "by_n_atoms": res,
            "results": res[str(a.n[0])], "n_atoms": a.n[0], "repeats": a.repeats}
    (OUT / "bench_terms.json").write_text(json.dumps(info, indent=1))
    md = write_md(info, a.n, a.repeats)
    (OUT / "bench_terms.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
