"""Regenerate the results table of README.md from experiments/results/ (between the
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers).

Usage: python experiments/update_readme.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "experiments" / "results"
sys.path.insert(0, str(ROOT / "experiments" / "longrange"))
import ablation  # noqa: E402  (its CHOICE; the module imports no lrnn code at its top)


def load(rel):
    p = RES / rel
    return json.loads(p.read_text()) if p.exists() else None


def rows():
    out = ["| model / data | energy MAE | force MAE | time | bar | command |", "|---|---|---|---|---|---|"]
    d = load("demo/demo_results.json")
    if d:
        ok = d["energy_mae"] < 1.0 and d["force_mae"] < 3.0 and d.get("wall_time_s", 0) <= 600
        out.append(f"| demo: DeepPot-SE, paracetamol, 950 train, {d['n_structures']} held-out test | "
                   f"{d['energy_mae']:.3f} kcal/mol | {d['force_mae']:.3f} kcal/mol/Å | "
                   f"{d.get('wall_time_s', d['total_time_s']):.0f} s (fresh clone, install included, shared cores) | "
                   f"E < 1.0, F < 3.0, ≤ 600 s: {'met' if ok else 'NOT met'} | `make demo` |")
    q = load("demo/demo_results_quiet.json")
    if q:
        out.append(f"| demo, same, quiet machine (venv already installed) | {q['energy_mae']:.3f} kcal/mol | "
                   f"{q['force_mae']:.3f} kcal/mol/Å | {q['wall_time_s']:.0f} s (without install) | "
                   f"E < 1.0, F < 3.0: {'met' if q['energy_mae'] < 1.0 and q['force_mae'] < 3.0 else 'NOT met'} | "
                   "`lrnn demo` |")
    a = load("aspirin/results.json")
    if a:
        out.append(f"| DeepPot-SE, rMD17 aspirin split 01, 1000 test | {a['energy_mae']:.3f} kcal/mol | "
                   f"{a['force_mae']:.3f} kcal/mol/Å | {a['total_time_s'] / 60:.1f} min | E ≤ 0.5, F ≤ 1.5, ≤ 1 h: "
                   f"{'met' if a['meets_bars'] else 'NOT met'} | `python experiments/train_aspirin.py` |")
    r = load("longrange/random_charges/results.json")
    if r:
        x = r["results"]["latent_charges"]["N512"]
        y = r["results"]["local_only"]["N512"]
        out.append(f"| random ±1 charges, trained N ≤ 64, tested N = 512: latent charges (local only) | "
                   f"{x['energy_mae_eV']:.3f} eV ({y['energy_mae_eV']:.3f} eV); "
                   f"{100 * x['rel_error_vs_coulomb_mean']:.2f} % ({100 * y['rel_error_vs_coulomb_mean']:.1f} %) "
                   f"of E_Coulomb | {x['force_mae_eV_per_A']:.3f} eV/Å ({y['force_mae_eV_per_A']:.3f}) | | "
                   f"≤ 1 %: {'met' if r['met'] else 'NOT met'} | `python experiments/longrange/random_charges.py train` |")
    out += ablation_rows()
    out += lode_rows()
    out += hdnnp_rows()
    b = load("longrange/bench_terms.json")
    if b and "by_n_atoms" in b and {"3000", "10000"} <= set(b["by_n_atoms"]):
        x, y = b["by_n_atoms"]["3000"], b["by_n_atoms"]["10000"]
        worst = max(x["far_field"]["relative_to_local"], x["latent_coulomb"]["relative_to_local"])
        out.append(f"| cost of the FMM-based terms (far-field, latent Coulomb) relative to local, energy+forces | "
                   f"N = 3000: {x['far_field']['relative_to_local']:.2f}x / {x['latent_coulomb']['relative_to_local']:.2f}x "
                   f"(exact sums below fmm_min_atoms); N = 10000 with FMM: "
                   f"{y['far_field (fmm)']['relative_to_local']:.2f}x / {y['latent_coulomb (fmm)']['relative_to_local']:.2f}x "
                   f"| | {x['local']['median_s']:.3f} s local at 3000 | ≤ 2x: {'met' if worst <= 2 else 'NOT met'} | "
                   "`python experiments/longrange/bench_terms.py` |")
        if "sog (hierarchical)" in x and "sog (hierarchical)" in y:
            h = [r["sog (hierarchical)"]["relative_to_local"] for r in (x, y)]
            out.append(f"| cost of SOG (open boundaries) relative to local, energy+forces: hierarchical (O(N), "
                       f"tol 1e-6) vs exact pair sum | N = 3000: {h[0]:.2f}x vs {x['sog']['relative_to_local']:.2f}x; "
                       f"N = 10000: {h[1]:.2f}x vs {y['sog']['relative_to_local']:.2f}x | | | ≤ 2x: "
                       f"{'met' if max(h) <= 2 else 'NOT met'} | "
                       "`python experiments/longrange/bench_terms.py --only sog \"sog (hierarchical)\"` |")
    out += fmm_rows()
    out += les_rows()
    m = load("md/bench_longrange.json")
    if m and m.get("rows"):
        ratios = ", ".join(f"N = {r['n_atoms']}: {r['ratio_longrange_to_local']:.2f}x "
                           f"({r['ms_per_step_with_longrange'] / 1e3:.1f} vs {r['ms_per_step_local'] / 1e3:.1f} s, "
                           f"{r['replans']} re-plans, {r['recompilations_with_longrange']} recompilations)"
                           for r in m["rows"])
        g = m.get("time_per_atom_growth_with_longrange")
        ok = m["bars"]["longrange_at_most_2x_local"] and m["bars"]["time_per_atom_growth_at_most_1.5x"]
        out.append(f"| jax-md NVE on open water-like clusters, FMM latent Coulomb vs local, per step "
                   f"({m['rows'][0]['steps_per_run']} timed steps, float32 network) | {ratios}; time per atom "
                   f"10k→30k with long range: {g:.2f}x | | | ≤ 2x, ≤ 1.5x: {'met' if ok else 'NOT met'} | "
                   "`python experiments/bench_md.py --longrange` |")
    c = load("uncertainty/aspirin_committee/results.json")
    if c:
        t, s1 = c["test"], c["stages"]["stage1"]["stage_record"]["train_summary"]
        s2 = c["stages"][c["chosen"]]["stage_record"]["train_summary"]
        s3 = c.get("stage3")
        chose3 = s3["chosen"] if s3 and s3["chosen"] != c["chosen"] else None
        times, steps = [s1["train_time_s"], s2["train_time_s"]], [s1["steps"], s2["steps"]]
        if chose3:
            s3_run = s3["rows"][chose3]["stage_record"]["train_summary"]
            times, steps = times + [s3_run["train_time_s"]], steps + [s3_run["steps"]]
        stage3 = ""
        if s3:
            base = c["chosen"]
            others = ", ".join(f"{r['pool_force_spearman']:.3f} (`{n}`)" for n, r in s3["rows"].items() if n != base)
            before = s3["rows"][base]["pool_force_spearman"]
            stage3 = (f"; stage 3 (the force NLL in the loss): pool force Spearman {before:.3f} → {others} on 2000 "
                      f"configurations outside split 01, so `{s3['chosen']}` "
                      f"{'kept' if s3['chosen'] == base else 'taken'} (every candidate in stage3.md)")
        out.append(f"| committee of {c['members']} DeepPot-SE, rMD17 aspirin split 01, 1000 test (mean of the members); "
                   f"force Spearman {t['force_spearman']:.3f}, miscalibration area {t['miscalibration_area']:.3f} → "
                   f"{t['miscalibration_area_recalibrated']:.3f} recalibrated on validation; stage 2 `{c['chosen']}` "
                   f"chosen on validation (every variant in results.md){stage3} | "
                   f"{t['energy_mae']:.3f} kcal/mol | {t['force_mae']:.3f} kcal/mol/Å | "
                   f"{' + '.join(f'{x / 60:.0f}' for x in times)} min ({' + '.join(str(x) for x in steps)} "
                   f"steps) | Spearman ≥ {c['bar_force_spearman']}: {'met' if c['met'] else 'NOT met'} | "
                   "`python experiments/uncertainty/aspirin_committee.py` |")
    return out + al_rows() + peer_rows() + timed_rows() + equivariant_rows() + scale_rows() + thesis_rows()


def thesis_rows():
    """The thesis's Table 5.3 redone (experiments/thesis_table.py): one row per molecule,
    labels, protocol and variant, mean ± std over the seeds run, failures counted."""
    recs = load("thesis_table/results.json") or []
    if not recs:
        return []
    sys.path.insert(0, str(ROOT / "experiments"))
    from thesis_table import (  # the thesis and sGDML figures
        SEEDS_TO_CALL,
        THESIS,
        energy_only,
        findings,
        mean_pm,
    )

    cells = {}
    for r in recs:
        cells.setdefault((r["molecule"], r["labels"], r["protocol"], r["variant"]), []).append(r)
    out = []
    for (m, lab, p, v), rs in sorted(cells.items()):
        ok = [r for r in rs if r.get("status") == "ok"]
        e = [r["energy_mae_kcal_mol"] for r in ok]
        f = [r["force_mae_kcal_mol_A"] for r in ok if r.get("force_mae_kcal_mol_A") is not None]
        ms = lambda x: mean_pm(x) if x else "–"  # noqa: E731
        fails = len(rs) - len(ok)
        bar = ""
        if lab == "md17" and energy_only(p) and e:
            th, sg = min(THESIS[m][:2]), THESIS[m][2]
            bar = (f"< thesis {th}: {'met' if np.mean(e) < th else 'NOT met'}; ≤ 2× sGDML ({2 * sg:.3f}): "
                   f"{'met' if np.mean(e) <= 2 * sg else 'NOT met'}")
        out.append(f"| thesis table: DeepPot-SE {v}, {m}, {lab} labels, {p} protocol, "
                   f"{'/'.join(str(n) for n in sorted({r['n_train'] for r in ok})) or '–'} train "
                   f"(seeds: {len(ok)} ok{f', **{fails} failed**' if fails else ''}) | {ms(e)} kcal/mol | "
                   f"{ms(f) + ' kcal/mol/Å' if f else '– (energy only)' if energy_only(p) else '–'} | "
                   f"{np.mean([r['train_time_s'] for r in ok]) / 60:.0f} min/run, one core | {bar} | "
                   f"`python experiments/thesis_table.py` |" if ok else
                   f"| thesis table: {v}, {m}, {lab}, {p}: **{fails} failed** | – | – | – | | "
                   f"`python experiments/thesis_table.py` |")
    words = findings(recs)
    if words:  # after the table (a blank line ends it): where long range helps, by the script's rule
        out += ["", "**Where long range helps in the thesis table** (test energy MAE relative to local-only, "
                f"paired by seed, mean ± sample std; \"helps\"/\"hurts\" only beyond the seed spread with ≥ {SEEDS_TO_CALL} seeds; "
                "`experiments/results/thesis_table/results.md`):", ""] + [f"- {w}" for w in words]
    return out


def scale_rows():
    """Energy+forces against N and training against device count (experiments/bench_scale.py)."""
    s = load("scale/bench.json")
    if not s or "per_atom_ratio_1e4_1e5" not in s:
        return []
    lo, hi = s["bars"]["sizes_used"]
    full = {r["n_atoms"]: r for r in s["sizes"] if r["model"] == "fmm" and not r["periodic"]}
    ok = s["bars"]["per_atom_ratio_at_most_2"] and s["bars"]["peak_at_most_8_gib"]
    out = [f"| energy+forces, DeepPot-SE + FMM latent Coulomb, open water-like clusters, float32: time per atom "
           f"N = {hi} / N = {lo}; peak memory at {hi} | {s['per_atom_ratio_1e4_1e5']:.2f}x "
           f"({full[hi]['us_per_atom']:.0f} vs {full[lo]['us_per_atom']:.0f} µs/atom); {s['peak_gib_1e5']:.2f} GiB "
           f"| | {full[hi]['seconds']:.1f} s at {hi} | ≤ 2x, ≤ 8 GiB: {'met' if ok else 'NOT met'} "
           "| `python experiments/bench_scale.py` |"]
    for model, periodic, what in (("p3m", True, "P3M latent Coulomb (σ 1 Å, mesh σ/2), periodic water boxes"),
                                  ("farfield", False, "far-field descriptor by the FMM, open clusters"),
                                  ("sog_h", False, "hierarchical SOG (8 Gaussians), open clusters")):
        rs = sorted((r for r in s["sizes"] if r["model"] == model and r["periodic"] == periodic),
                    key=lambda r: r["n_atoms"])
        if rs:
            out.append(f"| energy+forces, DeepPot-SE + {what}, float32: time per atom; peak memory | "
                       + " / ".join(f"{r['us_per_atom']:.0f} µs/atom at {r['n_atoms']}" for r in rs)
                       + f"; {rs[-1]['peak_rss_gib']:.2f} GiB at {rs[-1]['n_atoms']} | | {rs[-1]['seconds']:.1f} s at "
                       f"{rs[-1]['n_atoms']} (load average {rs[-1].get('run', {}).get('load_avg_start', [np.nan])[0]:.1f}"
                       f" at the start) | no bar (the bars are for the FMM model)"
                       + ("; over the 8 GiB of that bar" if rs[-1]["peak_rss_gib"] > 8 else "")
                       + " | `python experiments/bench_scale.py` |")
    dev = s.get("devices")
    if isinstance(dev, list) and dev:
        out.append("| training step, demo model, batch 8, on 1 / 2 / 4 fake CPU devices sharing 2 cores (sharding "
                   "overhead, not speed-up) | " + " / ".join(f"{r['ms_per_step']:.0f}" for r in dev)
                   + " ms/step | | | | `python experiments/bench_scale.py` |")
    return out


def les_rows():
    """Random ±1 charges with the LES protocol (random_charges_128.py): every variant and
    run length, 128-atom and 4096-atom test sets, mean ± std over the seeds run."""
    recs = load("longrange/random_charges_128/results.json") or []
    out = []
    for variant, steps in sorted({(r["variant"], r["steps"]) for r in recs}):
        rs = [r for r in recs if r["variant"] == variant and r["steps"] == steps]
        cells = []
        for n in (128, 4096):
            e = np.array([t["energy_mae_meV_per_atom"] for r in rs for t in r["tests"] if t["n_atoms"] == n])
            f = np.array([t["force_mae_meV_per_A"] for r in rs for t in r["tests"] if t["n_atoms"] == n])
            cells.append((n, e, f))
        diagnostic = variant.startswith("rep_")  # the repulsion alone (labels minus the exact Coulomb)
        bar = ("diagnostic: the local part's floor, no bar" if diagnostic else
               "LES 0.041 meV/atom, 3.7 meV/Å at 128, 5 seeds: "
               + ("met" if len(rs) >= 5 and cells[0][1].mean() <= 0.041 and cells[0][2].mean() <= 3.7 else "NOT met"))
        out.append(f"| random ±1 charges, LES protocol (128 atoms, 900 train, 4 Å): {variant}, {steps} steps, "
                   f"{len(rs)} seed(s){', repulsion-only labels' if diagnostic else ''}; test N = 128 / 4096 | "
                   + " / ".join(f"{e.mean():.3g} ± {e.std():.2g}" for _, e, _ in cells) + " meV/atom | "
                   + " / ".join(f"{f.mean():.3g} ± {f.std():.2g}" for _, _, f in cells) + f" meV/Å | | {bar} | "
                   "`python experiments/longrange/random_charges_128.py train report` |")
    return out


#: the long-range column of the ablation fixed in ablation.py before any run (no selection
#: by test error): latent Coulomb + dispersion + far-field (open), latent Coulomb + SOG (periodic)
ABLATION_CHOICE = ablation.CHOICE
#: rows where the long-range issue sets a bar (≥ 5x lower test energy MAE than local only)
ABLATION_BARS = {"lode_0_CC": 5.0, "lode_9_CP": 5.0}


def ablation_rows():
    """Every ablation dataset: local only next to the pre-chosen long-range column."""
    ab = load("longrange/ablation/results.json") or {}
    out = []
    for row, cols in ab.items():
        loc, lr = cols.get("local"), cols.get(ABLATION_CHOICE)
        if not loc or not lr:
            out.append(f"| ablation, {row}: a column is missing | | | | | `python experiments/longrange/ablation.py run` |")
            continue
        u = loc["energy_unit"]
        gain = loc["energy_mae_mean"] / lr["energy_mae_mean"]
        bar = ABLATION_BARS.get(row)
        tight = lr["energy_mae_std"] < lr["energy_mae_mean"] / 3
        verdict = (f"≥ {bar:g}x with seed std < mean/3: {'met' if gain >= bar and tight else 'NOT met'}"
                   if bar else "")
        out.append(f"| ablation, {row}: {ABLATION_CHOICE} (fixed before the runs) vs local, test E / F MAE, "
                   f"{lr['n_seeds']} / {loc['n_seeds']} seeds, fixed steps | {lr['energy_mae_mean']:.3g} ± "
                   f"{lr['energy_mae_std']:.2g} vs {loc['energy_mae_mean']:.3g} ± {loc['energy_mae_std']:.2g} {u} "
                   f"({gain:.2g}x) | {lr['force_mae_mean']:.3g} ± {lr['force_mae_std']:.2g} vs "
                   f"{loc['force_mae_mean']:.3g} ± {loc['force_mae_std']:.2g} meV/Å | | {verdict} | "
                   "`python experiments/longrange/ablation.py run` |")
    return out


def lode_rows():
    """LODE dimers (lode_dimers.py), each protocol: local only next to the long-range column
    that the script chose on validation data; every dimer, with issue 18's bar.  Where the
    training recipe has been chosen on validation too (``recipes``: results_recipes.json),
    the rows are the adopted recipe's."""
    res = load("longrange/lode/results.json") or {}
    recipes = load("longrange/lode/results_recipes.json") or {}
    out = []
    for protocol, p in res.items():
        rec = recipes.get(protocol, {})
        recipe = "plain"
        if rec.get("ratio") is not None and rec.get("dimers"):
            p, recipe = rec, rec["recipe"]
        how = (f"recipe {recipe} (chosen on validation over plain, ratio {rec['ratio']:.2f}: results_recipes.md)"
               if rec.get("ratio") is not None and rec.get("dimers") else "recipe plain")
        for d, r in p["dimers"].items():
            (lm, ls), (cm, cs) = r["local_meV"], r["chosen_meV"]
            (lf, lfs), (cf, cfs) = r["local_force_meV_A"], r["chosen_force_meV_A"]
            out.append(f"| LODE {d}, {protocol} protocol: {p['chosen']} (chosen on validation) vs local, {how}, "
                       f"test E / F MAE, 5 seeds, fixed steps | {cm:.3g} ± {cs:.2g} vs {lm:.3g} ± {ls:.2g} meV "
                       f"({lm / cm:.2g}x) | {cf:.3g} ± {cfs:.2g} vs {lf:.3g} ± {lfs:.2g} meV/Å | | {r['bar']}: "
                       f"{'not judged yet' if r['met'] is None else 'met' if r['met'] else 'NOT met'} | `python experiments/longrange/lode_dimers.py "
                       f"{'run' if recipe == 'plain' else 'run --recipe ' + recipe + '`, then `recipes'}` |")
    return out


def hdnnp_rows():
    """4G-HDNNP subsets (hdnnp4g.py): local only next to the long-range column the script
    chose on validation data, every set; no bar in the issue beyond 5 seeds."""
    res = load("longrange/hdnnp4g/results.json") or {}
    chosen, out = res.get("chosen"), []
    for s, cols in res.get("sets", {}).items():
        if chosen not in cols or "local" not in cols:
            out.append(f"| 4G-HDNNP {s}: a column is missing | | | | | `python experiments/longrange/hdnnp4g.py run` |")
            continue
        (lm, ls), (cm, cs) = cols["local"]["energy_rmse_meV_atom"], cols[chosen]["energy_rmse_meV_atom"]
        (lf, lfs), (cf, cfs) = cols["local"]["force_rmse_meV_A"], cols[chosen]["force_rmse_meV_A"]
        out.append(f"| 4G-HDNNP {s} subset: {chosen} (chosen on validation) vs local, test E / F RMSE, "
                   f"{cols[chosen]['n_members']} seeds, fixed steps | {cm:.3g} ± {cs:.2g} vs {lm:.3g} ± {ls:.2g} "
                   f"meV/atom ({lm / cm:.2g}x) | {cf:.3g} ± {cfs:.2g} vs {lf:.3g} ± {lfs:.2g} meV/Å | | no bar (issue 18 c: 5 seeds, a written split) "
                   "| `python experiments/longrange/hdnnp4g.py run` |")
    return out


def fmm_rows():
    """Scaling, speed against fmm3dpy and memory of lrnn.fmm (experiments/bench_fmm.py)."""
    f = load("fmm/bench.json")
    if not f:
        return []
    res = [r for r in f["results"] if "error" not in r]
    fm = {(r["dist"], r["n"], r["order"]): r for r in res if r["kind"] == "fmm"}
    f3 = {(r["dist"], r["n"], r["eps"]): r for r in res if r["kind"] == "fmm3d"}
    out = []
    for dist in ("uniform", "plummer"):
        ratios = [(c["ratio"], c["order"]) for c in f.get("per_particle_ratio", [])
                  if c["dist"] == dist and c["n_sizes"] == 3]
        if ratios:
            worst = max(ratios)
            out.append(f"| lrnn.fmm {dist}: time per particle, max/min over N = 1e4, 1e5, 1e6 | "
                       + ", ".join(f"p={o}: {r:.2f}" for r, o in ratios)
                       + f" | | | ≤ 2: {'met' if worst[0] <= 2 else 'NOT met'} | `python experiments/bench_fmm.py` |")
        a, b = fm.get((dist, 10**5, 12)), f3.get((dist, 10**5, 1e-6))
        if a and b:
            ok = a["rel_err"] <= 1e-6 and a["time_s"] <= 3 * b["time_s"]
            out.append(f"| lrnn.fmm {dist}, N = 1e5, p = 12 (rel. err. {a['rel_err']:.1e}) vs fmm3dpy eps 1e-6 | "
                       f"{a['time_s']:.2f} s vs {b['time_s']:.2f} s ({a['time_s'] / b['time_s']:.2f}x) | | | "
                       f"≤ 3x at ≤ 1e-6: {'met' if ok else 'NOT met'} | `python experiments/bench_fmm.py` |")
        big = [r for k, r in fm.items() if k[0] == dist and k[1] == 10**6]
        if big:
            peak = max(r["peak_rss_gib"] for r in big)
            out.append(f"| lrnn.fmm {dist}, N = 1e6: peak memory (whole process), orders "
                       f"{', '.join(str(r['order']) for r in sorted(big, key=lambda r: r['order']))} | "
                       f"{peak:.2f} GiB (max) | | | ≤ 4 GiB: {'met' if peak <= 4 else 'NOT met'} | "
                       "`python experiments/bench_fmm.py` |")
    return out


def al_rows():
    """Active learning against random selection (experiments/active_learning/run.py report)."""
    a = load("active_learning/results.json")
    if not a or not a.get("arms"):
        return []
    arms = {k: [r for r in v if r.get("complete", True)] for k, v in a["arms"].items()}
    going = sum(not r.get("complete", True) for v in a["arms"].values() for r in v)
    if not all(arms.get(k) for k in ("al", "random")):
        return []
    final = {k: np.array([r["curve"][-1][1] for r in v if r["curve"]]) for k, v in arms.items()}
    labels = sorted({r["curve"][-1][0] for k in ("al", "random") for r in arms[k] if r["curve"]})
    need = {k: _labels([r["labels_to_target"] for r in v]) for k, v in arms.items()}
    ratio, tb = a.get("ratio_al_to_random"), a.get("target_b", {})
    bar = _half_the_labels(ratio, tb.get("ratio_al_to_random"), "active-learning",
                           a.get("pairs", {}).get("al/random", {}).get("target_c"))
    bar += "" if bar.startswith("met") else _why_al(arms)
    return [f"| active learning vs random selection, Ac-Ala3-NHMe, GFN2-xTB labels, committee of 4 DeepPot-SE, 50 "
            f"initial + 25 labels per round, {len(final['al'])} / {len(final['random'])} complete repeats (al / "
            f"random){f', {going} run(s) still going' if going else ''}; 500 "
            f"test frames at 500 K | | final test force MAE ({labels} labels): al {final['al'].mean():.3f} ± "
            f"{final['al'].std():.3f}, random {final['random'].mean():.3f} ± {final['random'].std():.3f} eV/Å | | "
            f"labels to {a['target_force_mae_eV_per_A']} eV/Å: al {need['al']}, random {need['random']}; target (b) "
            f"{tb.get('force_mae_eV_per_A', float('nan')):.3f} eV/Å: al {_labels(tb.get('al_labels'))}, random "
            f"{_labels(tb.get('random_labels'))}; al ≤ ½ random: {bar} | `python experiments/active_learning/run.py run`, then "
            "`report` |"] + qbc_rows(a, arms, final, need) + superseded_rows(a)


def superseded_rows(a):
    """Pool-arm runs on an earlier xTB set: shown, never pooled with the current runs."""
    out = []
    for sha, runs in a.get("superseded", {}).items():
        curves = "; ".join(f"{name}: " + ", ".join(f"{n} {f:.3f}" for n, f in r["curve"]) for name, r in runs.items())
        out.append(f"| query by committee vs pool draws on an earlier xTB set ({sha[:8]}, regenerated differently "
                   f"since), superseded and not pooled with the current runs | | test force MAE (eV/Å) by labels: "
                   f"{curves} | | labels to {a['target_force_mae_eV_per_A']} eV/Å: "
                   + ", ".join(f"{name} {_labels(r['labels_to_target'])}" for name, r in runs.items()) + " | "
                   "`experiments/results/active_learning/superseded_xtb_*` |")
    return out


def _labels(n) -> str:
    """Labels needed to reach a target, as read in a table: a run (None: never reached), a
    list of runs, or a mean over runs (to 0.1 label)."""
    if isinstance(n, list):
        return "[" + ", ".join(map(_labels, n)) + "]"
    return "never" if n is None else f"{round(n, 1):g}"


def _half_the_labels(ratio, ratio_b, runs: str, target_c: dict | None = None) -> str:
    """The bar "at most half the labels random selection needs", from the ratio at the fixed
    target (a) or, where not every run reached it, at target (b); where neither, the measured
    ratio at target (c), which every run reaches (``run.py`` docstring)."""
    if ratio is not None:
        return "met" if ratio <= 0.5 else f"NOT met (ratio {ratio:.2f})"
    if ratio_b is not None:
        return (f"{'met' if ratio_b <= 0.5 else 'NOT met'} at target (b) only (ratio {ratio_b:.2f}); "
                "target (a) not reached by both")
    if target_c:
        return (f"NOT met: neither (a) nor (b) reached by every {runs} run; measured ratio {target_c['ratio']:.2f} "
                f"at target (c) {target_c['force_mae_eV_per_A']:.3f} eV/Å, the largest final error of the pair "
                f"(labels {_labels(target_c['active_labels'])} vs {_labels(target_c['reference_labels'])}, "
                "interpolated between rounds)")
    return f"NOT met: neither target reached by every {runs} run"


def _label_energy_offsets(arms, names) -> dict:
    """Per arm, each run's mean labelled energy above the test mean, in test std (``run.py``
    ``labelled_frames``); runs with no labels left out."""
    return {k: [r["labelled_frames"]["energy_above_test_mean_in_test_std"] for r in arms.get(k, [])
                if r.get("labelled_frames", {}).get("n")] for k in names}


def _why_qbc(arms) -> str:
    """Evidence for the qbc/pool outcome: how well the final committees' deviation ranks their
    own test errors, and where the frames each arm labelled lie against the test frames."""
    ev = [r["final_committee_on_test"] for r in arms.get("qbc", []) + arms.get("pool", [])
          if r.get("final_committee_on_test")]
    lab = _label_energy_offsets(arms, ("qbc", "pool"))
    if not ev or not all(lab.values()):
        return ""
    sp = np.array([e["force_spearman"] for e in ev])
    rho = np.array([e["member_error_correlation"] for e in ev])
    if sp.mean() >= 0.5:  # the deviation does rank the errors: no evidence for this reading
        return ""
    return (f"; why: the final committees' deviation ranks their own test errors only weakly (per-structure "
            f"Spearman {sp.mean():.2f} ± {sp.std(ddof=1) if len(sp) > 1 else 0:.2f}, member force-error correlation "
            f"{rho.mean():.2f}, {len(ev)} committees), and pool and test frames come from one 500 K MD, so random draws "
            f"already follow the test distribution while qbc's labels sit {np.mean(lab['qbc']):+.2f} test std from the "
            f"test mean energy (pool {np.mean(lab['pool']):+.2f})")


def _why_al(arms) -> str:
    """Evidence for the al/random outcome: where the explored frames each arm labelled lie."""
    lab = _label_energy_offsets(arms, ("al", "random"))
    if not all(lab.values()) or min(np.mean(v) for v in lab.values()) < 3:  # "far above": > 3 test std
        return ""
    return (f"; why: both arms label frames of their own committees' MD, which sit far above the test frames in "
            f"energy (al {np.mean(lab['al']):+.1f}, random {np.mean(lab['random']):+.1f} test std from the test mean), "
            "so neither arm's labels cover the test distribution")


def qbc_rows(a, arms, final, need):
    """Query by committee on the reference-MD pool against random draws from the same pool."""
    pair = a.get("pairs", {}).get("qbc/pool", {})
    if not (arms.get("qbc") and arms.get("pool")):
        return []
    tb = pair.get("target_b", {})
    bar = _half_the_labels(pair.get("ratio"), tb.get("ratio"), "query-by-committee", pair.get("target_c"))
    bar += "" if bar.startswith("met") else _why_qbc(arms)
    return [f"| query by committee vs random draws from the same xTB MD pool, Ac-Ala3-NHMe, committee of 4 "
            f"DeepPot-SE, 50 initial + 25 labels per round, {len(final['qbc'])} / {len(final['pool'])} complete "
            f"repeats (qbc / pool); 500 test frames at 500 K | | final test force MAE: qbc {final['qbc'].mean():.3f} ± "
            f"{final['qbc'].std():.3f}, pool {final['pool'].mean():.3f} ± {final['pool'].std():.3f} eV/Å | | labels to "
            f"{a['target_force_mae_eV_per_A']} eV/Å: qbc {need['qbc']}, pool {need['pool']}; target (b) "
            f"{tb.get('force_mae_eV_per_A', float('nan')):.3f} eV/Å: qbc {_labels(tb.get('active_labels'))}, pool "
            f"{_labels(tb.get('reference_labels'))}; qbc ≤ ½ pool: {bar} | `python experiments/active_learning/run.py run "
            "--arms qbc pool`, then `report` |"]


def timed_rows():
    """EANN family against DeepPot-SE at equal training time (local_models/timed_runs.py):
    the EANN variant chosen by validation force MAE, its per-configuration cost from
    local_models/bench.py (the same process times both models)."""
    res = ROOT / "experiments" / "local_models" / "results"
    recs = [json.loads(p.read_text()) for p in sorted(res.glob("timed_*.json"))]
    bench = json.loads((res / "bench.json").read_text()) if (res / "bench.json").exists() else {"results": []}
    strip = lambda m: {k: v for k, v in m.items() if k != "type_map"}  # noqa: E731
    cost = {json.dumps(strip(b["model"]), sort_keys=True): b for b in bench["results"]}
    out = []
    for minutes in sorted({r["minutes"] for r in recs}):
        same = [r for r in recs if r["minutes"] == minutes and "validation" in r]
        eann = [r for r in same if r["model"]["type"] == "eann"]
        deep = [r for r in same if r["model"]["type"] == "deeppot_se"]
        if not eann or not deep:
            continue
        e = min(eann, key=lambda r: r["validation"]["force_mae"])
        d = deep[0]
        ce, cd = (cost.get(json.dumps(strip(r["model"]), sort_keys=True)) for r in (e, d))
        if ce is None or cd is None:
            continue
        ok = (e["test"]["energy_mae"] <= d["test"]["energy_mae"] and e["test"]["force_mae"] <= d["test"]["force_mae"]
              and ce["ef_ms_batch1"] <= cd["ef_ms_batch1"] and ce["ef_ms_batch32"] <= cd["ef_ms_batch32"])
        kind = f"REANN ({e['model']['recursions']} round)" if e["model"].get("recursions") else "EANN"
        out.append(f"| {kind} vs DeepPot-SE, rMD17 aspirin split 01, {minutes:g} min of training each on one core "
                   f"(EANN variant `{e['name']}` chosen on validation of {len(eann)}); E+F ms/configuration at "
                   f"batch 1 / 32: {ce['ef_ms_batch1']:.2f} / {ce['ef_ms_batch32']:.2f} vs {cd['ef_ms_batch1']:.2f} / "
                   f"{cd['ef_ms_batch32']:.2f} | {e['test']['energy_mae']:.3f} vs {d['test']['energy_mae']:.3f} kcal/mol | "
                   f"{e['test']['force_mae']:.3f} vs {d['test']['force_mae']:.3f} kcal/mol/Å | {e['train_summary']['steps']} "
                   f"vs {d['train_summary']['steps']} steps | errors ≤ DeepPot-SE's at ≤ its cost: "
                   f"{'met' if ok else 'NOT met'} | `python experiments/local_models/timed_runs.py` |")
    return out


def equivariant_rows(timed_dir=ROOT / "experiments" / "local_models" / "results"):
    """The MACE-like model's 2-hour runs on 2 cores (issue 20: E <= 0.19 kcal/mol and
    F <= 0.50 kcal/mol/Å on the 1000 test configurations of aspirin split 01): the committed
    one (chosen on validation) first, then every other 2-hour run in ``timed_dir``."""
    committed = load("local_models/aspirin_equivariant/record.json")
    if committed is None:
        return []
    runs = {committed["name"]: committed}
    for path in sorted(Path(timed_dir).glob("timed_*.json")):
        r = json.loads(path.read_text())
        if r["model"].get("type") == "mace" and r["minutes"] >= 120 and "test" in r:
            runs.setdefault(r["name"], r)
    out = []
    for name, r in runs.items():
        t, s, v = r["test"], r["train_summary"], r.get("validation", {})
        ok = t["energy_mae"] <= 0.19 and t["force_mae"] <= 0.50
        bar = f"E ≤ 0.19, F ≤ 0.50: {'met' if ok else 'NOT met'}"
        bar += "" if name == committed["name"] else " (not the committed model: chosen on validation)"
        val = f", validation E {v['energy_mae']:.3f} / F {v['force_mae']:.3f}" if v else ""
        out.append(f"| MACE-like equivariant (`mace`: {r['model']['channels']} channels, l ≤ {r['model']['l_max']}, "
                   f"correlation {r['model']['correlation']}, {r['model']['n_layers']} layers){_recipe(r['config'])}, "
                   f"rMD17 aspirin split 01, {r['minutes']:g} min on cores {','.join(map(str, r['cores']))} (load "
                   f"{r['load_avg_before'][0]:.1f} at the start), best on validation{val}, 1000 test | "
                   f"{t['energy_mae']:.3f} kcal/mol | {t['force_mae']:.3f} kcal/mol/Å | {s['steps']} steps | {bar} | "
                   f"`python experiments/local_models/timed_runs.py run --name {r['name']} --config {r['config']} "
                   f"--minutes {r['minutes']:g}` |")
    return out


def _recipe(config: str) -> str:
    """The training additions of a run config (moving average, second stage), in words."""
    tr = (yaml.safe_load((ROOT / config).read_text()) or {}).get("train", {})
    parts = [f"weight EMA {tr['ema_decay']:g}"] if tr.get("ema_decay") else []
    if tr.get("stage2_from"):
        parts.append(f"stage 2 over the last {100 * (1 - tr['stage2_from']):.0f} % with p_e {tr['stage2_pref_e']:g}, "
                     f"p_f {tr['stage2_pref_f']:g}")
    return f", {'; '.join(parts)}" if parts else ""


def dp_step(at: dict, rec: dict) -> str:
    """Where DeePMD-kit's checkpoint at T lies in its run (its step count is fixed from its measured
    speed, so a slower run has not finished its learning-rate schedule at the budget)."""
    if "checkpoint_step" not in at:
        return ""
    whole = rec["deepmd"]["numb_steps"] / rec["deepmd"]["steps_per_s"] / 60
    return (f"; DeePMD-kit's checkpoint: step {at['checkpoint_step']}, its whole run {whole:.1f} min at "
            f"{rec['deepmd']['steps_per_s']:.1f} steps/s")


def peer_rows():
    """lrnn DeepPot-SE against DeePMD-kit se_e2_a (experiments/bench_local_models.py)."""
    recs = load("local_models/peer.json") or []
    out = []
    cmd = "`python experiments/bench_local_models.py install`, then `speed`"
    for r in (r for r in recs if r["kind"] == "speed"):
        a, b = r["lrnn"], r["deepmd"]
        ratios = [a["train_steps_per_s"] / b["train_steps_per_s"], b["ef_ms_batch1"] / a["ef_ms_batch1"],
                  b["ef_ms_batch32"] / a["ef_ms_batch32"]]
        out.append(f"| lrnn DeepPot-SE vs DeePMD-kit {r['versions']['deepmd']} se_e2_a (PyTorch {r['versions']['torch']}), "
                   f"same model, float32, {len(r['cores'])} cores, rMD17 {r['molecule']}: training steps/s (batch 8); "
                   f"E+F ms/configuration at batch 1 / 32 | {a['train_steps_per_s']:.1f} vs {b['train_steps_per_s']:.1f} "
                   f"steps/s ({ratios[0]:.2f}x); {a['ef_ms_batch1']:.2f} vs {b['ef_ms_batch1']:.2f} ms ({ratios[1]:.1f}x); "
                   f"{a['ef_ms_batch32']:.2f} vs {b['ef_ms_batch32']:.2f} ms ({ratios[2]:.1f}x) | | load average "
                   f"{r['loadavg_start'][0]:.1f} at the start | ≥ 1x: {'met' if min(ratios) >= 1 else 'NOT met'} | {cmd} |")
    for r in (r for r in recs if r["kind"] == "train"):
        for t, a in r["lrnn"]["at"].items():
            b = r["deepmd"]["at"].get(t)
            if b is None:
                continue
            ok = a["energy_mae_kcal_mol"] <= b["energy_mae_kcal_mol"] and a["force_mae_kcal_mol_A"] <= b["force_mae_kcal_mol_A"]
            out.append(f"| lrnn DeepPot-SE vs DeePMD-kit se_e2_a, rMD17 {r['molecule']} split 01, {r['minutes']:g}-min "
                       f"budget, best on validation at {t} min, seed {r['seed']}, 1000 test | {a['energy_mae_kcal_mol']:.3f} "
                       f"vs {b['energy_mae_kcal_mol']:.3f} kcal/mol | {a['force_mae_kcal_mol_A']:.3f} vs "
                       f"{b['force_mae_kcal_mol_A']:.3f} kcal/mol/Å | {t} min of {r['minutes']:g} ({r['lrnn']['steps']} vs "
                       f"{r['deepmd']['numb_steps']} steps{dp_step(b, r)}) | errors ≤ DeePMD-kit's at {t} min: {'yes' if ok else 'no'} "
                       f"({'the bar' if float(t) == 60 and r['minutes'] == 60 else 'the bar is at 60 min of a 60-min run'}) | `python experiments/bench_local_models.py train "
                       f"--minutes {r['minutes']:g}` |")
    return out


def main():
    text = (ROOT / "README.md").read_text()
    a, b = "<!-- results:begin -->", "<!-- results:end -->"
    if a not in text or b not in text:
        raise SystemExit("README.md lacks the results markers")
    head, rest = text.split(a, 1)
    _, tail = rest.split(b, 1)
    (ROOT / "README.md").write_text(head + a + "\n" + "\n".join(rows()) + "\n" + b + tail)
    print("\n".join(rows()))


if __name__ == "__main__":
    main()
