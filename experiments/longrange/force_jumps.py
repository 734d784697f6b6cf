"""Largest force jump as one atom crosses each term's boundaries (the thesis's defect,
measured): the local cutoff r_c and switch start r_cs, the thesis grid's cell boundaries,
the far-field switch, the dispersion cutoff, and the FMM re-plan of the FMM-evaluated
terms when an atom leaves its leaf.  Random-initialised float64 models of two
species; the atom is moved by ±1e-7 Å across the boundary and max |ΔF| (eV/Å) over all
atoms is reported, next to the typical force scale.

Usage: python experiments/longrange/force_jumps.py
Writes experiments/results/longrange/force_jumps.{md,json}.
"""

import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lrnn import models  # noqa: E402
from lrnn.batch import make_inputs  # noqa: E402
from lrnn.nn import split  # noqa: E402
from lrnn.potential import energy_forces_virial  # noqa: E402
from lrnn.system import Dataset  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "results" / "longrange"
BASE = {"type": "deeppot_se", "type_map": [1, 8], "rcut": 4.0, "rcut_smth": 1.0, "embed": [8, 16],
        "axis_neurons": 4, "fit": [16, 16]}
STATS = {"s_avg": jnp.zeros(2), "s_std": jnp.ones(2) * 0.3, "dir_std": jnp.ones(2) * 0.3, "n_norm": 5.0}
CASES = [  # (model, extra config, boundary name, x position of the boundary for atom 5)
    ("local", {}, "r_c", None),
    ("local", {}, "r_cs", None),
    ("thesis grid", {"grid": {"spacing": 4.0, "n_cells": 4}}, "grid cell wall", 8.0),
    ("far_field", {"far_field": {"r_on": 3.0, "r_off": 4.0}}, "far-field r_off", None),
    ("latent_coulomb", {"long_range": [{"type": "latent_coulomb", "sigma": 0.5}]}, "r_c", None),
    ("sog", {"long_range": [{"type": "sog", "n_gaussians": 4}]}, "r_c", None),
    ("dispersion", {"long_range": [{"type": "dispersion", "r_on": 5.0, "r_off": 6.0}]}, "dispersion r_off", None),
]


def forces(cfg, pos, num):
    g, st = split(models.create(cfg, seed=0, dtype=jnp.float64))
    _, mcfg = models.model_config(cfg)
    inp, _ = make_inputs(Dataset(pos[None], np.asarray(num)[None], [0.0]), mcfg, dtype=np.float64)
    return np.asarray(energy_forces_virial(g, st, STATS, jax.tree.map(lambda x: jnp.asarray(x[0]), inp))[1])


FMM_MODEL = {"rcut": 4.0, "rcut_smth": 1.0, "embed": [8, 16], "axis_neurons": 4, "fit": [16, 16],
             "far_field": {"r_on": 3.0, "r_off": 4.5, "method": "fmm"}, "fmm_min_atoms": 500,
             "long_range": [{"type": "latent_coulomb", "sigma": 0.5, "fit": [8], "method": "fmm"}]}


def fmm_replan_jumps(orders=(6, 10), n=1200):
    """Force jump of the FMM-evaluated model (far-field descriptor + latent Coulomb) when an
    atom leaves its leaf (beyond the 10 % skin) and the Potential re-plans: ±1e-7 Å around
    the point where the plan is given up.  With a fixed plan the FMM is a smooth function
    of the positions, so this is the only place where its force can jump (by the FMM
    error, which the order controls)."""
    from lrnn import fmm
    from lrnn.md import untrained_potential
    from lrnn.plans import FMM_SKIN

    rng = np.random.default_rng(3)
    pos = rng.uniform(0, (n / 0.05) ** (1 / 3), (n, 3))
    species = np.where(np.arange(n) % 3 == 0, 8, 1)
    rows = []
    for order in orders:
        pot = untrained_potential([1, 8], dict(FMM_MODEL, fmm_order=order), seed=1, dtype="float64",
                                  output_scale=0.1)
        pot.calculate(pos, species)
        plan = pot.fmm_plan
        h = float(plan.leaf_side)
        for i in range(n):  # an atom that can reach its leaf's +x wall without a close contact
            center, h = plan.particle_box(i)
            xb = float(center[0]) + 0.5 * h * (1 + FMM_SKIN)
            p = pos.copy()
            p[i, 0] = xb
            d = np.linalg.norm(np.delete(p, i, 0) - p[i], axis=1).min()
            if d > 1.5 and p[i, 0] < pos[:, 0].max():
                break
        fs = []
        for x in (xb - 1e-6, xb + 1e-6):  # the skin test has a 1e-12 slack; straddle it safely
            p = pos.copy()
            p[i, 0] = x
            fs.append(pot.calculate(p, species)["forces"])
        assert pot.fmm_replans == 2, "the second position should have triggered one re-plan"
        smooth = np.abs(fs[1] - fs[0]).max()  # includes the 2e-6 Å move itself
        rows.append({"model": f"far_field + latent_coulomb (fmm, order {order})", "boundary": "FMM re-plan",
                     "max_force_jump_eV_per_A": float(smooth), "force_scale_eV_per_A": float(np.abs(fs[0]).max()),
                     "plan_depth": plan.depth, "leaf_side_A": h})
        print(rows[-1], flush=True)
        assert fmm.needs_replan(plan, p)
    return rows


def main():
    rng = np.random.default_rng(7)
    pos = rng.uniform(0, 14, (10, 3))
    pos[0] = 0.0
    pos[6] = pos[5] + [-1.5, 0.3, 0.0]
    num = [8, 1] * 5
    rows = []
    for name, extra, where, xb in CASES:
        cfg = dict(BASE, **extra)
        p0 = pos.copy()
        if xb is not None:  # move atom 5 along x through the wall at xb (grid origin = -1e-6)
            pts = [xb - 1e-6 - 1e-7, xb - 1e-6 + 1e-7]
            fs = []
            for x in pts:
                p = p0.copy()
                p[5, 0] = x
                fs.append(forces(cfg, p, num))
        else:  # move atom 5 radially away from atom 6 through the radius
            radius = {"r_c": BASE["rcut"], "r_cs": BASE["rcut_smth"], "far-field r_off": 4.0,
                      "dispersion r_off": 6.0}[where]
            u = (p0[5] - p0[6]) / np.linalg.norm(p0[5] - p0[6])
            fs = []
            for d in (radius - 1e-7, radius + 1e-7):
                p = p0.copy()
                p[5] = p0[6] + d * u
                fs.append(forces(cfg, p, num))
        jump = float(np.abs(fs[1] - fs[0]).max())
        rows.append({"model": name, "boundary": where, "max_force_jump_eV_per_A": jump,
                     "force_scale_eV_per_A": float(np.abs(fs[0]).max())})
        print(rows[-1], flush=True)
    rows += fmm_replan_jumps()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "force_jumps.json").write_text(json.dumps(rows, indent=1))
    md = ["# Largest force jump as an atom crosses a boundary (±1e-7 Å), random float64 models", "",
          "Command: `python experiments/longrange/force_jumps.py`", "",
          "| model | boundary | max \\|ΔF\\| (eV/Å) | max \\|F\\| (eV/Å) |", "|---|---|---|---|"]
    md += [f"| {r['model']} | {r['boundary']} | {r['max_force_jump_eV_per_A']:.2e} | {r['force_scale_eV_per_A']:.2e} |"
           for r in rows]
    md += ["", "A continuous force changes by O(1e-7) here; the thesis grid jumps by a finite amount.",
           "FMM rows: a 1200-atom cluster; the atom moves by ±1e-6 Å across the point where it leaves its "
           "leaf (plus the 10 % skin) and the Potential re-plans; the jump is the change of FMM error "
           "between two plans (a fixed plan is smooth), set by the expansion order."]
    (OUT / "force_jumps.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
