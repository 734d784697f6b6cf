"""Cost of each long-range term at N ≈ 3,000 atoms: energy+forces time of the local
DeepPot-SE model alone and with each term added, median of repeats after compile.

System: a 3,000-atom free cluster of water-like O/H at liquid density (random positions,
O–H pairs 0.97 Å apart, no atoms closer than 0.9 Å); parameters random (timing only).
Usage: python experiments/longrange/bench_terms.py [--n 3000] [--repeats 5]
Writes experiments/results/longrange/bench_terms.{md,json}.
"""

import argparse
import json
import time
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
    "latent_coulomb": {"long_range": [{"type": "latent_coulomb", "sigma": 1.0, "fit": [16]}]},
    "sog": {"long_range": [{"type": "sog", "n_gaussians": 8, "fit": [16]}]},
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    pos, num = water_cluster(a.n)
    base = {"type": "deeppot_se", "type_map": [1, 8], "rcut": 5.0, "rcut_smth": 0.5, "embed": [16, 32, 64],
            "axis_neurons": 8, "fit": [128, 128, 128], "neighbor_mode": "cutoff"}
    stats = {"s_avg": jnp.full(2, 0.2), "s_std": jnp.full(2, 0.3), "dir_std": jnp.full(2, 0.2), "n_norm": 40.0}
    rows = {}
    for name, extra in VARIANTS.items():
        cfg = dict(base, **extra)
        g, st = split(models.create(cfg))
        _, mcfg = models.model_config(cfg)
        inp, _ = make_inputs(Dataset(pos[None], num[None], [0.0]), mcfg)
        inp = jax.tree.map(lambda x: jnp.asarray(x[0]), inp)
        fn = jax.jit(energy_forces_virial, static_argnums=0)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(g, st, stats, inp))
        compile_s = time.perf_counter() - t0
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(g, st, stats, inp))
            ts.append(time.perf_counter() - t0)
        rows[name] = {"median_s": float(np.median(ts)), "compile_s": compile_s}
        print(name, rows[name], flush=True)
    for r in rows.values():
        r["relative_to_local"] = r["median_s"] / rows["local"]["median_s"]
    OUT.mkdir(parents=True, exist_ok=True)
    info = {"n_atoms": int(len(num)), "device": str(jax.devices()[0]), "dtype": "float32", "results": rows,
            "note": "long-range terms evaluated by exact O(N^2) sums (FMM evaluation inside the model not yet wired)"}
    (OUT / "bench_terms.json").write_text(json.dumps(info, indent=1))
    md = [f"# Energy+forces cost of each term, N = {len(num)} atoms (free water-like cluster)", "",
          f"Command: `python experiments/longrange/bench_terms.py`; {info['device']}, float32, median of "
          f"{a.repeats}.", "", "| model | time (s) | relative to local |", "|---|---|---|"]
    for k, r in rows.items():
        md.append(f"| {k} | {r['median_s']:.3f} | {r['relative_to_local']:.2f}x |")
    md += ["", info["note"] + "."]
    (OUT / "bench_terms.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
