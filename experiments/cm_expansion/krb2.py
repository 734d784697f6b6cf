"""KRb + KRb: analytic reference data, C_m network fit, pure-network baseline, figures.

    OMP_NUM_THREADS=1 python experiments/cm_expansion/krb2.py [--quick] [--time-limit S]

Protocol (issue 4 / the paper): 29,706 points, R 16–64 bohr, r_i 5.67–8.87 bohr, 10 % test
split; u_LR = -Σ_{m=3..6} C_m(r1, r2, θ1, θ2, φ)/R^m with a feed-forward C_m network,
fitted by Levenberg–Marquardt with early stopping on a validation split (10 % of the
remaining points).  The pure network (u directly from R, r1, r2, θ1, θ2, φ) is trained on
the same split.  Writes experiments/cm_expansion/data/krb2.npz (+ settings),
experiments/results/cm_expansion/krb2/{model,pure_model,results.json,results.md,*.png}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from lrnn.cm import data as D  # noqa: E402
from lrnn.cm import fit, krb, model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = os.path.join(HERE, "data", "krb2.npz")
OUT = os.path.join(ROOT, "experiments", "results", "cm_expansion", "krb2")
PAPER = dict(rmse_cm=0.0244, frac_rel_lt_10pct=0.9786, frac_rel_lt_1pct=0.7995)
CUTS = {  # (theta1, theta2, phi) in degrees: the 1-D cuts of the figure
    "head-to-tail (0, 0, 0)": (0.0, 0.0, 0.0),
    "side-by-side antiparallel (90, 90, 180)": (90.0, 90.0, 180.0),
    "T-shape (0, 90, 0)": (0.0, 90.0, 0.0),
    "tilted (45, 120, 60)": (45.0, 120.0, 60.0),
}


def make_data(n=29706, seed=0):
    d = krb.sample(n, seed=seed)
    settings = dict(n=n, seed=seed, generator="lrnn.cm.krb.sample", R_range=[16, 64],
                    r_range=list(krb.R_RANGE), angles="theta_i, phi uniform in [0, 180] deg",
                    reference="analytic multipole/induction/dispersion, issue 4 formulas",
                    units=dict(length="bohr", angle="deg", energy="cm^-1"))
    os.makedirs(os.path.dirname(DATA), exist_ok=True)
    D.save_npz(DATA, d, settings)
    return d


def splits(d, seed=0):
    n = d["R"].size
    te, rest = D.split(n, (0.1, 0.9), seed=seed)
    tr_i, va_i = D.split(rest.size, (0.9, 0.1), seed=seed + 1)
    return D.subset(d, rest[tr_i]), D.subset(d, rest[va_i]), D.subset(d, te)


def cut_data(angles, R):
    t1, t2, ph = angles
    n = R.size
    c = dict(R=R, r1=np.full(n, 7.65), r2=np.full(n, 7.65), theta1_deg=np.full(n, t1),
             theta2_deg=np.full(n, t2), phi_deg=np.full(n, ph))
    c["u_cm"] = krb.u_lr(R, 7.65, 7.65, *np.deg2rad([t1, t2, ph]))
    return c


def extrapolation(m, n_random=2000, seed=5):
    """Relative errors for R in [64, 1000]: on the cuts and on random geometries.

    Where u_LR changes sign along a cut the relative error is undefined; the cut is then
    also reported without the points within ±25 % in R of the node (head-to-tail and
    side-by-side cuts have nodes near R = 120 and 88 bohr, where C3/R^3 and C5/R^5 cancel)."""
    R = np.geomspace(64, 1000, 200)
    out, away, nodes = {}, {}, {}
    for name, ang in CUTS.items():
        c = cut_data(ang, R)
        rel = np.abs(np.asarray(m(c)) - c["u_cm"]) / np.abs(c["u_cm"])
        out[name] = float(rel.max())
        flip = np.nonzero(np.sign(c["u_cm"][1:]) != np.sign(c["u_cm"][:-1]))[0]
        keep = np.ones_like(R, bool)
        for i in flip:
            Rn = float(np.sqrt(R[i] * R[i + 1]))
            nodes.setdefault(name, []).append(Rn)
            keep &= np.abs(R / Rn - 1) > 0.25
        away[name] = float(rel[keep].max())
    d = krb.sample(n_random, seed=seed, R_range=(64.0, 1000.0))
    rel = np.abs(np.asarray(m(d)) - d["u_cm"]) / np.abs(d["u_cm"])
    return dict(max_rel_on_cuts=out, max_rel_on_cuts_away_from_nodes=away, nodes_bohr=nodes,
                random=dict(
        n=n_random, frac_rel_lt_1pct=float(np.mean(rel < 0.01)),
        median_rel=float(np.median(rel)), max_rel=float(rel.max())))


def figures(models, test, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = models["C_m network"]
    u = test["u_cm"]
    err = np.abs(np.asarray(m(test)) - u)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.loglog(np.abs(u), err, ".", ms=2, alpha=0.5)
    x = np.geomspace(np.abs(u).min(), np.abs(u).max(), 10)
    rel = err / np.abs(u)
    for f, ls in ((1.0, "-"), (0.1, "--"), (0.01, ":")):
        frac = np.mean(rel < f) if f < 1 else np.mean(rel >= 1)
        lab = (f"{100 * f:g} % line: {100 * frac:.2f} % below" if f < 1
               else f"100 % line: {100 * frac:.2f} % above")
        ax.loglog(x, f * x, "k" + ls, lw=1, label=lab)
    ax.set_xlabel("|u_LR| reference (cm$^{-1}$)")
    ax.set_ylabel("|error| (cm$^{-1}$)")
    ax.set_title("KRb + KRb, test set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "abs_error_vs_energy.png"), dpi=130)
    plt.close(fig)

    R = np.geomspace(16, 1000, 300)
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    for ax, (name, ang) in zip(axes.ravel(), CUTS.items()):
        c = cut_data(ang, R)
        ax.loglog(R, np.abs(c["u_cm"]), "k-", lw=2, label="reference")
        for lab, mm in models.items():
            ax.loglog(R, np.abs(np.asarray(mm(c))), "--" if "pure" in lab else
                      (":" if "paper" in lab else "-"), label=lab)
        ax.axvspan(16, 64, color="0.9")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("R (bohr)")
        ax.set_ylabel("|u_LR| (cm$^{-1}$)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("KRb + KRb: 1-D cuts, r1 = r2 = 7.65 bohr (grey: fitted R range)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cuts_vs_R.png"), dpi=130)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="small data and nets (smoke test)")
    p.add_argument("--time-limit", type=float, default=1800.0)
    p.add_argument("--pure-time-limit", type=float, default=600.0)
    p.add_argument("--hidden", default="10,5")
    p.add_argument("--product", type=int, default=1)
    p.add_argument("--features", default="angular")
    p.add_argument("--refit-every", type=int, default=10)
    p.add_argument("--paper-time-limit", type=float, default=600.0,
                   help="LM time for the paper-style network (raw angles in, 4 C_m out)")
    p.add_argument("--paper-hidden", default="60")
    p.add_argument("--relative", type=int, default=0)
    p.add_argument("--out", default=OUT)
    p.add_argument("--skip-pure", action="store_true")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    d = krb.sample(3000, seed=0) if a.quick else make_data()
    tr, va, te = splits(d)
    hidden = [int(h) for h in a.hidden.split(",")]
    cfg = model.make_config(model.DIATOM_DIATOM, tr, hidden=hidden, features=a.features,
                            cm_scale=[0.05, 5.0, 300.0, 1.3e4], name="krb2 C_m network",
                            product=bool(a.product))
    params = model.init_params(cfg, jax.random.PRNGKey(0))
    t0 = time.time()
    params, hist = fit.levenberg_marquardt(params, cfg, tr, va, max_iter=100000,
                                           relative=bool(a.relative), patience=300,
                                           time_limit=a.time_limit,
                                           refit_every=a.refit_every, projection=False, log_every=25)
    t_fit = time.time() - t0
    cm = model.CmModel(cfg, params)
    res = dict(system="KRb + KRb", n_points=int(d["R"].size), n_train=int(tr["R"].size),
               n_val=int(va["R"].size), n_test=int(te["R"].size), paper=PAPER)
    res["cm"] = dict(config={k: cfg.get(k) for k in ("hidden", "activation", "features",
                                                     "powers", "symmetrize", "product")},
                     n_params=cm.n_params(), lm_iterations=len(hist["it"]),
                     fit_seconds=round(t_fit, 1), test=D.metrics(te["u_cm"], cm(te)),
                     train=D.metrics(tr["u_cm"], cm(tr)), extrapolation=extrapolation(cm))
    cm.save(os.path.join(a.out, "model"), extra=dict(test=res["cm"]["test"]))
    print(json.dumps(res["cm"], indent=1), flush=True)
    models = {"C_m network": cm}
    if a.paper_time_limit > 0:
        ph_ = [int(h) for h in a.paper_hidden.split(",")]
        qcfg = model.make_config(model.DIATOM_DIATOM, tr, hidden=ph_, features="raw",
                                 cm_scale=[0.05, 5.0, 300.0, 1.3e4],
                                 name="krb2 paper-style C_m network")
        qp = model.init_params(qcfg, jax.random.PRNGKey(2))
        t0 = time.time()
        qp, qh = fit.levenberg_marquardt(qp, qcfg, tr, va, max_iter=100000, patience=300,
                                         time_limit=a.paper_time_limit, refit_every=1, projection=False,
                                         log_every=25)
        q = model.CmModel(qcfg, qp)
        res["paper_style"] = dict(
            config={k: qcfg[k] for k in ("hidden", "activation", "features", "powers")},
            n_params=q.n_params(), lm_iterations=len(qh["it"]),
            fit_seconds=round(time.time() - t0, 1), test=D.metrics(te["u_cm"], q(te)),
            extrapolation=extrapolation(q))
        q.save(os.path.join(a.out, "paper_style_model"))
        models["paper-style C_m network (raw angles)"] = q
        print(json.dumps(res["paper_style"], indent=1), flush=True)
    if not a.skip_pure:
        pcfg = model.make_config(model.DIATOM_DIATOM, tr, form="pure", hidden=[60],
                                 features="invariant", name="krb2 pure network")
        pp = model.init_params(pcfg, jax.random.PRNGKey(1))
        t0 = time.time()
        pp, ph = fit.levenberg_marquardt(pp, pcfg, tr, va, max_iter=100000, patience=300,
                                         time_limit=a.pure_time_limit, refit_every=1, projection=False,
                                         log_every=25)
        pure = model.CmModel(pcfg, pp)
        res["pure"] = dict(config={k: pcfg[k] for k in ("hidden", "activation", "features")},
                           n_params=pure.n_params(), lm_iterations=len(ph["it"]),
                           fit_seconds=round(time.time() - t0, 1),
                           test=D.metrics(te["u_cm"], pure(te)), extrapolation=extrapolation(pure))
        pure.save(os.path.join(a.out, "pure_model"))
        models["pure network (no C_m form)"] = pure
    figures(models, te, a.out)
    t = res["cm"]["test"]
    ex = res["cm"]["extrapolation"]
    res["acceptance"] = dict(
        rmse=t["rmse_cm"] <= 0.0244, frac10=t["frac_rel_lt_10pct"] >= 0.9786,
        frac1=t["frac_rel_lt_1pct"] >= 0.7995,
        extrapolation_cuts_lt_1pct=max(ex["max_rel_on_cuts_away_from_nodes"].values()) < 0.01)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_md(res, os.path.join(a.out, "results.md"))
    print(json.dumps(res["acceptance"]))
    return 0


def write_md(res, path):
    rows = [("paper (5-400-4, LM)", PAPER["rmse_cm"], None, PAPER["frac_rel_lt_10pct"],
             PAPER["frac_rel_lt_1pct"], "correct to 1000 bohr")]
    for key, lab in (("cm", "this work: C_m network, angular basis × product radial net"),
                     ("paper_style", "paper-style C_m network (raw angles, time-limited LM)"),
                     ("pure", "pure network (no C_m form)")):
        if key in res:
            t, ex = res[key]["test"], res[key]["extrapolation"]
            rows.append((f"{lab}, {res[key]['n_params']} params", t["rmse_cm"], t["mae_cm"],
                         t["frac_rel_lt_10pct"], t["frac_rel_lt_1pct"],
                         "max rel. err. on cuts "
                         f"{100 * max(ex['max_rel_on_cuts_away_from_nodes'].values()):.3g} %"
                         f"; random: {100 * ex['random']['frac_rel_lt_1pct']:.1f} % < 1 %"))
    lines = ["# KRb + KRb: neural C_m expansion",
             "",
             f"{res['n_points']} points (train {res['n_train']}, validation {res['n_val']}, "
             f"test {res['n_test']}), R 16–64 bohr; extrapolation checked for R 64–1000 bohr.",
             "",
             "| model | test RMSE (cm⁻¹) | MAE (cm⁻¹) | < 10 % | < 1 % | R = 64–1000 bohr |",
             "|---|---|---|---|---|---|"]
    for lab, rmse, mae, f10, f1, ex in rows:
        mae_s = "–" if mae is None else f"{mae:.4g}"
        lines.append(f"| {lab} | {rmse:.4g} | {mae_s} | {100 * f10:.2f} % | {100 * f1:.2f} % "
                     f"| {ex} |")
    ex = res["cm"]["extrapolation"]
    lines += ["", "C_m network, relative error for R = 64–1000 bohr on the 1-D cuts "
              "(r1 = r2 = 7.65 bohr), all points / away from nodes of u_LR:", ""]
    for name, v in ex["max_rel_on_cuts"].items():
        node = ex.get("nodes_bohr", {}).get(name)
        extra = f" (u_LR = 0 at R ≈ {', '.join(f'{x:.0f}' for x in node)} bohr)" if node else ""
        lines.append(f"- {name}: {100 * v:.3g} % / "
                     f"{100 * ex['max_rel_on_cuts_away_from_nodes'][name]:.3g} %{extra}")
    rnd = ex["random"]
    lines += [f"- {rnd['n']} random geometries, R 64–1000 bohr: {100 * rnd['frac_rel_lt_1pct']:.1f} % "
              f"under 1 %, median {100 * rnd['median_rel']:.3g} %", ""]
    if "cm_stage1" in res and "cm_refined" in res:
        a, b = res["cm_stage1"]["test"], res["cm_refined"]["test"]
        lines += [f"Stage 1 (absolute loss): RMSE {a['rmse_cm']:.4g}, < 1 % {100 * a['frac_rel_lt_1pct']:.2f} %; "
                  f"refined with relative weighting: RMSE {b['rmse_cm']:.4g}, < 1 % "
                  f"{100 * b['frac_rel_lt_1pct']:.2f} % (saved: {res['cm']['label']}).", ""]
    lines += ["Acceptance: " + ", ".join(f"{k}: {'pass' if v else 'FAIL'}"
                                         for k, v in res["acceptance"].items()), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
