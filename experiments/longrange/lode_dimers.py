"""LODE molecular dimers (issue 18, benchmark b): does a long-range term recover the
interaction beyond the local cutoff, under SOG-Net's protocol and when extrapolating?

Data: ../shared/data/lode_dimers (the LODE dimer sets as shipped with SOG-Net): six dimers of
charged (C), polar (P) and apolar (A) monomers, 13 rigid-monomer configurations each, stored
in order of increasing centre-of-mass distance (3.5-15.4 Å).  Total charges (the h5 files carry
none) follow from the monomer compositions: C3H10N3 (Z=49, odd: the +1 cation), C2H3O2 (Z=31:
acetate, -1), CH6N (Z=19: methylammonium, +1); the other monomers are neutral closed-shell
molecules.  Open boundaries (the monomers are far from the 30 Å box walls).

Protocols (indices in distance order):
  sognet         SOG-Net's: test = index 11, as its examples/main_DPSOG_dimer_CC.py, which
                 trains on the other 12.  Here 2 of those 12 (a fixed draw per dimer) are the
                 validation set and 10 are fitted.
  extrapolation  fitted on the 7 closest, validated on the 8th and 9th, tested on the 4 farthest.

Columns: DeepPot-SE (rcut 4.5 Å, smooth from 2.0 Å, embed (8, 16), 4 axis neurons, fit (32, 32)),
alone (`local`) and with each long-range term: `far_field` (3.0-4.5 Å switch), `latent_coulomb`
(σ 0.5 Å), `sog`, `dispersion`, `combination` (latent Coulomb + dispersion + far field); the
settings of ablation.py.  Every run: 6000 Adam steps (fixed, not a time budget), batch 3, learning
rate 3e-3 -> 1e-4 in stages of 300 steps, energy weight 100, force weight 10 -> 1; the final weights are kept
(``select: last``): with 2 validation structures the trainer's epoch score is dominated by
force noise and froze members at early epochs while their validation energy error kept
falling (seen on the first cell, extrapolation 0_CC, before the grid was run); validation then
only reports, every 200 steps.  The step count
was chosen on that cell's validation errors too (latent_coulomb, per member, meV): ablation.py's
2000 steps left three of five members with nearly flat binding curves (20-283); 6000 steps
gave 2-26 (a learning rate of 1e-2 gave 51-520, σ = 1.0 Å 2-129).

Seeds: each (protocol, dimer, column) cell is one committee of 5 (``train.committee: 5``), trained
in one vmap: member k starts from the weights of seed k; all members see the same batches.  Each
member keeps its own best epoch on the validation set, and is evaluated on its own; a cell reports
mean ± sample std over the 5 members.

Recipes: `plain` (the above) and `restarts3` (``train.restarts: 3``: each member is the
copy, of 3 from other seeds trained in the same vmap, with the best final validation score,
the trainer's score at the final loss weights).  `restarts3` was designed after the plain
grid's test numbers were seen, against its unreliable members (validation errors up to 10x
apart within a cell); its records live in `runs_restarts3/`, its report in
`results_restarts3.md` (``--recipe restarts3``).  ``recipes`` adopted restarts3 under both
protocols, so it is the default of ``run`` and ``report``; the plain grid is ``--recipe plain``.

The long-range column of each protocol is chosen on validation data only, by the script, before
any test error is read: the column with the smallest geometric mean over the six dimers of
(mean validation energy MAE / that of `local`).  The report puts it next to `local` for every
dimer and checks issue 18's bars; the full grid follows it.

Choosing the recipe (``recipes``), on validation data only, by a rule fixed before any
restarts3 test error was read: for each protocol the long-range column is the one chosen on
the plain grid's validation errors; restarts3 replaces plain for that protocol when, over all
six dimers, the geometric mean of (mean validation energy MAE of the column under restarts3 /
under plain) is below 1.  Only then are the test errors of the adopted recipe's `local` and
long-range cells put side by side with issue 18's bars (`results_recipes.md`).  The plain grid's
records were git-ignored and are lost; where they are missing, ``recipes`` keeps the choice it
made from them (column, validation means, ratio) from the committed `results_recipes.json`.

Usage: python experiments/longrange/lode_dimers.py run [--protocols ...] [--dimers ...] [--columns ...] [--recipe R]
       python experiments/longrange/lode_dimers.py report [--recipe R]
       python experiments/longrange/lode_dimers.py recipes
Runs are resumable: one record per cell in experiments/results/longrange/lode/runs/; checkpoints in
runs/lode/ (git-ignored).  Several workers may run at once (a lock per cell, held while a worker
runs it and released by the kernel when the worker dies).  `report` writes results.md, results.json and binding_<protocol>.png there.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import choose as choose_column  # noqa: E402
from cells import load_records, provenance, run_cells, stats  # noqa: E402

from lrnn.data import read_lode_h5  # noqa: E402
from lrnn.potential import load  # noqa: E402
from lrnn.train import load_config, train  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "longrange" / "lode"
WORK = HERE.parents[1] / "runs" / "lode"
SHARED = HERE.parents[1].parent / "shared" / "data" / "lode_dimers"
DIMERS = ["0_CC", "9_CP", "2_CA", "29_PP", "3_PA", "6_AA"]
CHARGED = ["0_CC", "9_CP"]  # the ≥ 5x bar; the others must not get worse
TOTAL_CHARGE = {"0_CC": 0.0, "2_CA": 1.0, "3_PA": 0.0, "6_AA": 0.0, "9_CP": 1.0, "29_PP": 0.0}
COULOMB = {"type": "latent_coulomb", "sigma": 0.5, "fit": [16]}
DISPERSION = {"type": "dispersion", "r0": 3.0, "r_on": 16.0, "r_off": 20.0}
FAR = {"far_field": {"r_on": 3.0, "r_off": 4.5}}
COLUMNS = {  # model options on top of the local DeepPot-SE
    "local": {},
    "far_field": FAR,
    "latent_coulomb": {"long_range": [COULOMB]},
    "sog": {"long_range": [{"type": "sog", "n_gaussians": 6, "s_min": 1.0, "s_max": 15.0, "fit": [16]}]},
    "dispersion": {"long_range": [DISPERSION]},
    "combination": {"long_range": [COULOMB, DISPERSION], **FAR},
}
MODEL = {"type": "deeppot_se", "rcut": 4.5, "rcut_smth": 2.0, "embed": [8, 16], "axis_neurons": 4, "fit": [32, 32]}
SEEDS = 5
TRAIN = {"seed": 0, "committee": SEEDS, "batch_size": 3, "schedule": "steps", "max_steps": 6000,
         "decay_steps": 300, "lr_start": 3e-3, "lr_stop": 1e-4, "pref_e_start": 100.0, "pref_e_limit": 100.0,
         "pref_f_start": 10.0, "pref_f_limit": 1.0, "progress": False, "checkpoint_every_s": 600,
         "select": "last", "val_every_steps": 200}
PROTOCOLS = ["sognet", "extrapolation"]
RECIPES = {"plain": {}, "restarts3": {"restarts": 3}}  # training options on top of TRAIN


def com_distance(ds):
    """Centre-of-mass distance (Å, unweighted centroids) of the two monomers of each structure."""
    z = ds.numbers[0][ds.mask[0]]
    p = ds.positions[:, : len(z)]
    _, lab = connected_components(np.linalg.norm(p[0][:, None] - p[0][None], axis=-1) < 1.8)
    return np.linalg.norm(p[:, lab == 0].mean(1) - p[:, lab == 1].mean(1), axis=-1)


def load_dimer(dimer):
    """The 13 structures of a dimer (padding atoms dropped, total charge set), in file order, and
    their centre-of-mass distances (Å)."""
    ds = read_lode_h5(SHARED / f"dimer{dimer}_data.h5")
    ds.total_charge[:] = TOTAL_CHARGE[dimer]
    m = ds.mask[0]
    ds = ds.subset(np.arange(len(ds)))
    ds.positions, ds.numbers, ds.forces = ds.positions[:, m], ds.numbers[:, m], ds.forces[:, m]
    r_com = com_distance(ds)
    if np.any(np.diff(r_com) <= 0):
        raise ValueError(f"dimer {dimer}: structures are not in order of increasing distance")
    return ds, r_com


def split(dimer, protocol, n=13):
    """(fit, validation, test) indices of a protocol."""
    if protocol == "sognet":
        test = np.array([11])
        rest = np.setdiff1d(np.arange(n), test)
        val = np.sort(np.random.default_rng(1000 + DIMERS.index(dimer)).choice(rest, 2, replace=False))
        return np.setdiff1d(rest, val), val, test
    if protocol == "extrapolation":
        return np.arange(7), np.arange(7, 9), np.arange(9, n)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")


def run(dimer, protocol, column, recipe="plain"):
    """Train one committee cell; its record (per-member predictions and errors)."""
    ds, r_com = load_dimer(dimer)
    fit, val, test = split(dimer, protocol, len(ds))
    out = WORK / protocol / dimer / (column if recipe == "plain" else f"{column}_{recipe}")
    tr = dict(TRAIN, **RECIPES[recipe])
    cfg = {"data": {"train": "in-memory", "report_energy_unit": "eV"}, "model": {**MODEL, **COLUMNS[column]},
           "train": dict(tr), "output": str(out)}
    t0 = time.perf_counter()
    summary = train(load_config(cfg), quiet=True, datasets={"train": ds.subset(fit), "val": ds.subset(val)})
    t_train = time.perf_counter() - t0
    e, f, _ = load(out / "checkpoint").predict_members(ds, batch_size=13)  # (K, 13), (K, 13, N, 3)
    e, f = np.asarray(e, float), np.asarray(f, float)

    def mae_e(idx):
        return np.mean(np.abs(e[:, idx] - ds.energy[idx]), axis=1).tolist()

    def mae_f(idx):
        return np.mean(np.abs(f[:, idx] - ds.forces[idx]), axis=(1, 2, 3)).tolist()

    return {"dimer": dimer, "protocol": protocol, "column": column, "recipe": recipe, "model": cfg["model"], "train": tr,
            "fit": fit.tolist(), "val": val.tolist(), "test": test.tolist(), "R_com": r_com.tolist(),
            "e_ref": ds.energy.tolist(), "e_pred": e.tolist(),
            "val_energy_mae_eV": mae_e(val), "test_energy_mae_eV": mae_e(test),
            "val_force_mae_eV_A": mae_f(val), "test_force_mae_eV_A": mae_f(test),
            "train_time_s": t_train, "compile_s": summary.get("compile_s"), "steps": summary.get("steps"),
            **provenance()}


def runs_dir(recipe="plain"):
    return RESULTS / ("runs" if recipe == "plain" else f"runs_{recipe}")


def record_path(protocol, dimer, column, recipe="plain"):
    return runs_dir(recipe) / f"{protocol}__{dimer}__{column}.json"


def cmd_run(a):
    if not SHARED.exists():
        raise SystemExit(f"LODE data not found at {SHARED}")
    run_cells([(p, d, c, a.recipe) for p in a.protocols for c in a.columns for d in a.dimers], record_path,
              lambda p, d, c, recipe: run(d, p, c, recipe),
              lambda r: f"val E {1e3 * np.mean(r['val_energy_mae_eV']):.1f} meV")


def choose(recs, protocol):
    """The long-range column of a protocol, from validation errors only: the smallest geometric
    mean over dimers of (mean validation energy MAE / local's); (choice, {column: score}),
    over the columns with every dimer done (None while local is incomplete)."""
    val = {(d, c): r["val_energy_mae_eV"] for (p, d, c), r in recs.items() if p == protocol}
    return choose_column(val, DIMERS, COLUMNS)


def bars(recs, protocol, chosen):
    """Issue 18's bars for one protocol: {dimer: (text, met)}; met is None where the bar needs
    columns that have not run (no column worse among those that have)."""
    out = {}
    for d in DIMERS:
        if (protocol, d, chosen) not in recs or (protocol, d, "local") not in recs:
            continue
        lm, ls = stats(recs[(protocol, d, "local")]["test_energy_mae_eV"])
        cm, cs = stats(recs[(protocol, d, chosen)]["test_energy_mae_eV"])
        if d in CHARGED:
            met = lm / cm >= 5 and cs < cm / 3
            out[d] = (f"≥ 5x with std < mean/3: {lm / cm:.1f}x, std/mean {cs / cm:.2f}", met)
        else:  # no long-range column worse than local by more than local's std
            ran = [c for c in COLUMNS if c != "local" and (protocol, d, c) in recs]
            worse = [c for c in ran if stats(recs[(protocol, d, c)]["test_energy_mae_eV"])[0] > lm + ls]
            only = f" (of the columns run: {', '.join(ran)})" if len(ran) < len(COLUMNS) - 1 else ""
            out[d] = ("no long-range column worse than local + 1 std" + only +  # None: not every column ran
                      (f": {', '.join(worse)} worse" if worse else ""), False if worse else (None if only else True))
    return out


def choose_recipe(plain, other, protocol):
    """The recipe rule (module docstring): (column, {dimer: (plain, other) mean validation MAE
    in meV}, geometric-mean ratio or None while incomplete, adopt other?)."""
    column, _ = choose(plain, protocol)
    if column is None:
        return None, {}, None, False
    val = {d: (stats(plain[(protocol, d, column)]["val_energy_mae_eV"])[0],
               stats(other[(protocol, d, column)]["val_energy_mae_eV"])[0])
           for d in DIMERS if (protocol, d, column) in other}
    if len(val) < len(DIMERS):
        return column, val, None, False
    ratio = float(np.exp(np.mean([np.log(o / p) for p, o in val.values()])))
    return column, val, ratio, ratio < 1


def cmd_recipes(a, other="restarts3"):
    plain, alt = (load_records(runs_dir(r), ("protocol", "dimer", "column")) for r in ("plain", other))
    path = RESULTS / "results_recipes.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    md = [f"# LODE dimers: recipe `plain` or `{other}`, chosen on validation", "",
          "Written by `python experiments/longrange/lode_dimers.py recipes` (the rule is in the script's "
          "docstring).  Validation / test energy MAE in meV, mean ± sample std over the 5 members.", ""]
    summary = {}
    for protocol in PROTOCOLS:
        column, val, ratio, adopt = choose_recipe(plain, alt, protocol)
        md += [f"## Protocol `{protocol}`", ""]
        kept = before.get(protocol, {})
        carried = column is None and kept.get("ratio") is not None
        if carried:  # the choice made when the plain grid was here
            column, ratio, adopt = kept["chosen"], kept["ratio"], kept["adopt"]
            val = {d: tuple(v) for d, v in kept["validation_meV"].items()}
            md += ["The plain grid's records are not in this checkout (they were git-ignored and lost); the "
                   "choice below is the one `recipes` made from them, carried from the committed "
                   "`results_recipes.json`.", ""]
        elif column is None:
            md += ["The plain grid is incomplete: no column, no choice.", ""]
            continue
        md += [f"Long-range column (chosen on the plain grid's validation errors): **{column}**.", "",
               f"| dimer | val plain | val {other} | val local plain | val local {other} |", "|---|---|---|---|---|"]
        for d in DIMERS:
            cells = [recs.get((protocol, d, c)) for c in (column, "local") for recs in (plain, alt)]
            text = ["not run" if r is None else "{:.3g} ± {:.2g}".format(*stats(r["val_energy_mae_eV"]))
                    for r in cells]
            if carried:  # the plain records are gone: the chosen column's mean was kept
                text[0] = f"{val[d][0]:.3g} (carried)" if d in val else "lost"
                text[2] = "lost" if cells[2] is None else text[2]
            md.append(f"| {d} | " + " | ".join(text) + " |")
        summary[protocol] = {"chosen": column, "validation_meV": val, "ratio": ratio, "adopt": adopt,
                             "recipe": other if adopt else "plain", **({"carried": True} if carried else {})}
        if ratio is None:
            md += ["", f"{len(val)} of {len(DIMERS)} dimers have run under {other}: no choice yet, and no "
                   "test error is shown.", ""]
            continue
        recipe, recs = (other, alt) if adopt else ("plain", plain)
        md += ["", f"Geometric mean of the validation ratio {other} / plain: {ratio:.3f}: **{recipe}** is "
               "adopted for this protocol.", "", f"Test, recipe `{recipe}`:", "",
               f"| dimer | local | {column} | local / {column} | bar |", "|---|---|---|---|---|"]
        if any((protocol, d, c) not in recs for d in DIMERS for c in ("local", column)):
            md += ["", f"`local` or `{column}` has not run on every dimer under {recipe}.", ""]
            continue
        rows, summary[protocol]["dimers"] = bar_table(recs, protocol, column)
        md += rows + [""]
    (RESULTS / "results_recipes.md").write_text("\n".join(md))
    (RESULTS / "results_recipes.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(md))


def bar_table(recs, protocol, column):
    """Test rows of local next to ``column`` with issue 18's bar, one per dimer (markdown
    lines), and their summary {dimer: {...}} for results*.json and the README."""
    rows, summary = [], {}
    for d, (text, met) in bars(recs, protocol, column).items():
        (lm, ls), (cm, cs) = (stats(recs[(protocol, d, c)]["test_energy_mae_eV"]) for c in ("local", column))
        rows.append(f"| {d} | {lm:.3g} ± {ls:.2g} | {cm:.3g} ± {cs:.2g} | {lm / cm:.2f}x | {text}: {verdict(met)} |")
        summary[d] = {"local_meV": [lm, ls], "chosen_meV": [cm, cs], "bar": text,
                      "met": None if met is None else bool(met),
                      "local_force_meV_A": stats(recs[(protocol, d, "local")]["test_force_mae_eV_A"]),
                      "chosen_force_meV_A": stats(recs[(protocol, d, column)]["test_force_mae_eV_A"])}
    return rows, summary


def verdict(met) -> str:
    return "not judged yet" if met is None else ("met" if met else "not met")


def plot(recs, protocol, chosen, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, d in zip(axes.ravel(), DIMERS):
        cols = [c for c in ("local", chosen) if c and (protocol, d, c) in recs]
        if not cols:
            ax.set_axis_off()
            continue
        r0 = recs[(protocol, d, cols[0])]
        R, eref = np.array(r0["R_com"]), np.array(r0["e_ref"])
        ax.plot(R, 1e3 * (eref - eref[-1]), "ko-", lw=1.5, label="reference")
        for c in cols:
            e = 1e3 * (np.array(recs[(protocol, d, c)]["e_pred"]) - eref[-1])
            line, = ax.plot(R, e.mean(0), ".--", label=f"{c} (mean of {len(e)})")
            ax.fill_between(R, e.min(0), e.max(0), color=line.get_color(), alpha=0.2)
        t = r0["test"]
        ax.plot(R[t], 1e3 * (eref[t] - eref[-1]), "rs", mfc="none", ms=9, label="test")
        ax.set(title=d, xlabel="centre-of-mass distance (Å)", ylabel="E − E_ref(farthest) (meV)")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(f"LODE dimers, {protocol} protocol: members' min-max shaded")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(a):
    suffix = "" if a.recipe == "plain" else f"_{a.recipe}"
    recs = load_records(runs_dir(a.recipe), ("protocol", "dimer", "column"))
    md = [f"# LODE dimers: local only vs the long-range column chosen on validation (recipe `{a.recipe}`)", "",
          f"Written by `python experiments/longrange/lode_dimers.py report --recipe {a.recipe}` from the records "
          f"in `{runs_dir(a.recipe).name}/` "
          "(settings in the script's docstring).  Test energy MAE in meV, mean ± sample std over the 5 "
          "members (seeds) of each cell; every member is evaluated on its own.", ""]
    summary = {}
    for protocol in PROTOCOLS:
        chosen, scores = choose(recs, protocol)
        summary[protocol] = {"chosen": chosen, "validation_scores": scores, "dimers": {}}
        md += [f"## Protocol `{protocol}`", ""]
        if chosen is None:
            md += ["Not every column has run on every dimer yet: no choice.", ""]
        else:
            md += [f"Chosen on validation: **{chosen}** (geometric mean over dimers of validation energy "
                   "MAE relative to local: " + ", ".join(f"{c} {s:.3f}" for c, s in sorted(scores.items(),
                                                                                        key=lambda x: x[1]))
                   + ").", "", f"| dimer | local | {chosen} | local / {chosen} | bar |", "|---|---|---|---|---|"]
            rows, summary[protocol]["dimers"] = bar_table(recs, protocol, chosen)
            md += rows + [""]
            plot(recs, protocol, chosen, RESULTS / f"binding_{protocol}{suffix}.png")
            md += [f"Binding curves (local and {chosen}): `binding_{protocol}{suffix}.png`.", ""]
            if protocol == "sognet":  # one test structure: each member's MAE is one |error|
                signed = {d: 1e3 * (np.array(recs[(protocol, d, chosen)]["e_pred"])[:, 11]
                                    - recs[(protocol, d, chosen)]["e_ref"][11]) for d in CHARGED}
                md += ["With one test structure each member's MAE is a single |error|; for unbiased Gaussian "
                       "errors the std/mean of |error| is sqrt(pi/2 - 1) = 0.76 whatever their size.  Signed test "
                       f"errors of the {chosen} members (meV): " + "; ".join(
                           f"{d} " + ", ".join(f"{x:+.2f}" for x in v) for d, v in signed.items()) + ".", ""]
        cols = [c for c in COLUMNS if any((protocol, d, c) in recs for d in DIMERS)]
        md += [f"Every column, test energy / force MAE (meV; meV/Å), `{protocol}`:", "",
               "| dimer | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for d in DIMERS:
            cells = []
            for c in cols:
                r = recs.get((protocol, d, c))
                if r is None:
                    cells.append("-")
                    continue
                (em, es), (fm, fs) = stats(r["test_energy_mae_eV"]), stats(r["test_force_mae_eV_A"])
                cells.append(f"{em:.3g} ± {es:.2g} / {fm:.3g} ± {fs:.2g}")
            md.append(f"| {d} | " + " | ".join(cells) + " |")
        times = [r["train_time_s"] for k, r in recs.items() if k[0] == protocol]
        md += ["", f"{len(times)} cells, {sum(times) / 60:.0f} min of training in all "
               f"({min(times, default=0):.0f}-{max(times, default=0):.0f} s per committee of 5, compilation "
               "included).", ""]
    (RESULTS / f"results{suffix}.md").write_text("\n".join(md))
    (RESULTS / f"results{suffix}.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--protocols", nargs="+", default=PROTOCOLS, choices=PROTOCOLS)
    r.add_argument("--dimers", nargs="+", default=DIMERS, choices=DIMERS)
    r.add_argument("--columns", nargs="+", default=list(COLUMNS), choices=list(COLUMNS))
    rep = sub.add_parser("report")
    for p in (r, rep):
        p.add_argument("--recipe", default="restarts3", choices=list(RECIPES))
    sub.add_parser("recipes")
    a = ap.parse_args()
    {"run": cmd_run, "report": cmd_report, "recipes": cmd_recipes}[a.cmd](a)


if __name__ == "__main__":
    main()
