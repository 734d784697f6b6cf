"""Random point charges with exact labels, and the latent-charge model trained on them.

Systems: N/2 cations (species Na, q = +1) and N/2 anions (species Cl, q = -1) placed
uniformly at random in a cube at 0.02 atoms/Å³ with no pair closer than 2.0 Å, open
boundaries;  E = Σ_{i<j} [ k q_i q_j / r_ij + A exp(-r_ij/ρ) ],  k = 14.399645 eV·Å,
A = 1000 eV, ρ = 0.3 Å;  forces exact (analytic gradient).

Usage:
  python experiments/longrange/random_charges.py generate     # data -> experiments/longrange/data/
  python experiments/longrange/random_charges.py train [--max-time S]
      trains the latent-charge model and a local-only baseline on N <= 64, tests on N = 512,
      writes experiments/results/longrange/random_charges/{results.md,results.json} and the
      latent-charge checkpoint experiments/results/longrange/random_charges/checkpoint
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE.parent / "results" / "longrange" / "random_charges"
K, A, RHO, DENSITY, DMIN = 14.399645, 1000.0, 0.3, 0.02, 2.0
TRAIN_SIZES, N_PER_SIZE, TEST_SIZES, N_TEST = (8, 16, 32, 48, 64), 240, (64, 512), 40


def place(n, rng):
    side = (n / DENSITY) ** (1.0 / 3.0)
    pos = np.empty((0, 3))
    while len(pos) < n:
        p = rng.uniform(0.0, side, 3)
        if len(pos) == 0 or np.min(np.linalg.norm(pos - p, axis=1)) >= DMIN:
            pos = np.vstack([pos, p])
    return pos


def labels(pos, q):
    """Exact energy (eV), Coulomb part (eV) and forces (eV/Å)."""
    d = pos[:, None, :] - pos[None, :, :]
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    coul = K * q[:, None] * q[None, :] / r
    rep = A * np.exp(-r / RHO)
    e_c = 0.5 * coul.sum()
    e = e_c + 0.5 * rep.sum()
    dedr = -coul / r - rep / RHO  # dE_pair/dr
    f = -np.sum((dedr / r)[..., None] * d, axis=1)
    return e, e_c, f


def make_set(sizes, count, seed):
    rng = np.random.default_rng(seed)
    n_max = max(sizes)
    out = {k: [] for k in ("R", "z", "E", "E_coulomb", "F")}
    for n in sizes:
        for _ in range(count):
            pos = place(n, rng)
            q = np.r_[np.ones(n // 2), -np.ones(n // 2)]
            e, ec, f = labels(pos, q)
            R, F = np.zeros((n_max, 3)), np.zeros((n_max, 3))
            z = np.zeros(n_max, int)
            R[:n], F[:n], z[:n] = pos, f, np.r_[np.full(n // 2, 11), np.full(n // 2, 17)]
            for k, v in zip(out, (R, z, e, ec, F)):
                out[k].append(v)
    return {k: np.asarray(v) for k, v in out.items()}


def generate():
    DATA.mkdir(parents=True, exist_ok=True)
    sets = {"train": (TRAIN_SIZES, N_PER_SIZE, 0)}
    sets.update({f"test_N{n}": ((n,), N_TEST, 100 + n) for n in TEST_SIZES})
    for name, (sizes, count, seed) in sets.items():
        d = make_set(sizes, count, seed)
        np.savez_compressed(DATA / f"random_charges_{name}.npz", **d, e_unit="eV", r_unit="Angstrom")
        print(name, d["R"].shape)
    settings = {"k_eV_A": K, "A_eV": A, "rho_A": RHO, "density_per_A3": DENSITY, "min_distance_A": DMIN,
                "train_sizes": TRAIN_SIZES, "structures_per_train_size": N_PER_SIZE, "test_sizes": TEST_SIZES,
                "structures_per_test_size": N_TEST, "seeds": {"train": 0, "test_N": "100 + N"},
                "charges": "Na +1 (first N/2), Cl -1 (last N/2)", "boundaries": "open",
                "format": "sGDML-style npz: R (Å), z, E (eV), F (eV/Å), E_coulomb (eV)",
                "generator": "experiments/longrange/random_charges.py generate"}
    (DATA / "settings.json").write_text(json.dumps(settings, indent=1))


def run_config(name, long_range, max_time):
    model = {"type": "deeppot_se", "rcut": 5.0, "rcut_smth": 2.0, "embed": [8, 16], "axis_neurons": 4,
             "fit": [32, 32]}
    if long_range:
        model["long_range"] = [{"type": "latent_coulomb", "sigma": 0.25, "fit": [16]}]
    return {"data": {"train": str(DATA / "random_charges_train.npz"), "n_train": 1100, "n_val": 100, "seed": 0,
                     "report_energy_unit": "eV"},
            "model": model,
            "train": {"batch_size": 8, "schedule": "time", "max_time_s": max_time, "max_steps": 10**8,
                      "lr_start": 3e-3, "lr_stop": 5e-5, "pref_e_start": 1.0, "pref_e_limit": 10.0,
                      "pref_f_start": 100.0, "pref_f_limit": 1.0, "checkpoint_every_s": 60},
            "output": str(HERE.parent.parent / "runs" / "random_charges" / name)}


def train_and_test(max_time):
    from lrnn.data import read_sgdml
    from lrnn.potential import load
    from lrnn.train import load_config, train

    RESULTS.mkdir(parents=True, exist_ok=True)
    if not (DATA / "random_charges_train.npz").exists():
        generate()
    rows = {}
    for name, lr in (("latent_charges", True), ("local_only", False)):
        cfg = load_config(run_config(name, lr, max_time))
        t0 = time.perf_counter()
        train(cfg)
        pot = load(Path(cfg["output"]) / "checkpoint")
        rows[name] = {"train_time_s": time.perf_counter() - t0}
        for n in TEST_SIZES:
            path = DATA / f"random_charges_test_N{n}.npz"
            ds = read_sgdml(path)
            ec = np.load(path)["E_coulomb"]
            t1 = time.perf_counter()
            e, f, _ = pot.predict(ds, batch_size=8)
            de = e - ds.energy
            rows[name][f"N{n}"] = {
                "energy_mae_eV": float(np.mean(np.abs(de))),
                "energy_mae_per_atom_eV": float(np.mean(np.abs(de) / n)),
                "mean_abs_coulomb_eV": float(np.mean(np.abs(ec))),
                "rel_error_vs_coulomb_mean": float(np.mean(np.abs(de) / np.abs(ec))),
                "rel_error_vs_coulomb_median": float(np.median(np.abs(de) / np.abs(ec))),
                "mae_over_mean_abs_coulomb": float(np.mean(np.abs(de)) / np.mean(np.abs(ec))),
                "force_mae_eV_per_A": float(np.mean(np.abs((f - ds.forces)[ds.mask]))),
                "predict_time_s": time.perf_counter() - t1}
        if lr:
            dst = RESULTS / "checkpoint"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(Path(cfg["output"]) / "checkpoint", dst)
    ok = rows["latent_charges"]["N512"]["rel_error_vs_coulomb_mean"] <= 0.01
    (RESULTS / "results.json").write_text(json.dumps({"results": rows, "bar_rel_error": 0.01, "met": ok},
                                                     indent=1))
    md = ["# Random point charges: train on N <= 64, test on N = 512 (8x larger)", "",
          "Command: `python experiments/longrange/random_charges.py generate && "
          "python experiments/longrange/random_charges.py train`", "",
          "| model | test N | E MAE (eV) | E MAE/atom (eV) | mean \\|ΔE\\|/\\|E_Coulomb\\| | F MAE (eV/Å) |",
          "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        for n in TEST_SIZES:
            x = r[f"N{n}"]
            md.append(f"| {name} | {n} | {x['energy_mae_eV']:.4f} | {x['energy_mae_per_atom_eV']:.5f} | "
                      f"{100 * x['rel_error_vs_coulomb_mean']:.2f} % | {x['force_mae_eV_per_A']:.4f} |")
    md += ["", f"Acceptance (latent charges, N = 512: energy error <= 1 % of the Coulomb energy): "
           f"{'met' if ok else 'NOT met'}.",
           "The latent-charge checkpoint is `experiments/results/longrange/random_charges/checkpoint` "
           "(`lrnn.load`)."]
    (RESULTS / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["generate", "train"])
    ap.add_argument("--max-time", type=float, default=600.0)
    a = ap.parse_args()
    generate() if a.what == "generate" else train_and_test(a.max_time)
    sys.exit(0)
