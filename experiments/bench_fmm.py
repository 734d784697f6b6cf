"""Benchmark lrnn.fmm against fmm3dpy and the tiled direct sum.

For N = 10^3 … 10^6, uniform (cube) and clustered (Plummer sphere) particle sets, each
measurement runs in its own subprocess (so that ``ru_maxrss`` is the peak memory of that
measurement alone) and reports the median wall time of several runs after compilation:

* our FMM potential (float64) at each order, with its relative RMS error against the
  direct sum (exact where the tiled direct sum fits; else against fmm3dpy at eps=1e-12
  on a random subset of 2000 target particles);
* fmm3dpy potentials at the eps matching each order's error;
* the tiled JAX direct sum for N ≤ ``--direct-max``.

Writes ``experiments/results/fmm/bench.{json,md,png}`` and a log.  Usage::

    python experiments/bench_fmm.py            # full (≈ 1 h on 2 cores)
    python experiments/bench_fmm.py --quick    # N ≤ 10^5, orders 5 and 12

Timings on a shared machine are noisy; the table says which machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "fmm"


# ------------------------------------------------------------------------------- worker
def _points(dist, n, seed=0):
    from lrnn.fmm.distributions import plummer, random_charges, uniform_cube

    x = uniform_cube(n, seed=seed) if dist == "uniform" else plummer(n, seed=seed)
    return x, random_charges(n, seed=seed)


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts


def _reference(x, q, idx):
    """Exact φ at targets idx (NumPy direct on a subset)."""
    import numpy as np

    out = np.empty(len(idx))
    b = max(1, int(2e7 // len(x)))
    for s in range(0, len(idx), b):
        ii = idx[s:s + b]
        d = x[ii, None, :] - x[None, :, :]
        r = np.sqrt((d * d).sum(-1))
        r[np.arange(len(ii)), ii] = np.inf
        out[s:s + b] = (q[None, :] / r).sum(1)
    return out


def worker(task):
    import resource

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    x, q = _points(task["dist"], task["n"])
    n = task["n"]
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(n, size=min(n, 2000), replace=False))
    ref_path = OUT / "cache" / f"ref_{task['dist']}_{n}.npy"
    if task["kind"] == "ref":  # separate process, so its memory is not counted below
        if not ref_path.exists():
            ref_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(ref_path, _reference(x, q, idx))
        print(json.dumps(dict(task, ok=True)))
        return
    ref = np.load(ref_path)
    res = dict(task)
    rep = task.get("repeats", 3)
    if task["kind"] == "fmm":
        import lrnn.fmm as F

        t0 = time.perf_counter()
        pl = F.plan(x, order=task["order"])
        res["plan_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        phi = np.asarray(F.potential_with_plan(pl, x, q))
        res["first_call_s"] = time.perf_counter() - t0
        res["time_s"], res["times"] = _median_time(
            lambda: F.potential_with_plan(pl, x, q).block_until_ready(), rep)
        res["plan"] = {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in pl.summary().items()}
    elif task["kind"] == "fmm3d":
        import fmm3dpy

        src = np.asfortranarray(x.T)

        def run():
            return fmm3dpy.lfmm3d(eps=task["eps"], sources=src, charges=q, pg=1)

        phi = 4 * np.pi * run().pot
        res["time_s"], res["times"] = _median_time(run, rep)
    else:  # direct
        import lrnn.fmm as F

        f = jax.jit(F.direct_potential)
        phi = np.asarray(f(x, q))
        res["time_s"], res["times"] = _median_time(lambda: f(x, q).block_until_ready(), rep)
    res["rel_err"] = float(np.sqrt(np.mean((phi[idx] - ref) ** 2) / np.mean(ref**2)))
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res["time_per_particle_us"] = res["time_s"] / n * 1e6
    print(json.dumps(res))


# ------------------------------------------------------------------------------- driver
def run_task(task, log, timeout):
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)],
                           capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        log.write(f"TIMEOUT {task}\n")
        return dict(task, error="timeout")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not line:
        log.write(f"FAILED {task}\n{p.stderr[-3000:]}\n")
        return dict(task, error=p.stderr[-500:])
    res = json.loads(line[-1])
    log.write(f"{time.time() - t0:7.1f}s wall  {json.dumps(res)}\n")
    log.flush()
    return res


# eps for fmm3dpy matching each of our orders (our rel. RMS error at that order, measured)
EPS_FOR_ORDER = {5: 1e-3, 8: 1e-5, 12: 1e-6, 14: 1e-7}


def per_particle_ratios(results):
    """O(N) check: max/min time per particle over N = 1e4 … 1e6 for each (dist, order)."""
    out = []
    for dist in ("uniform", "plummer"):
        for order in sorted({r.get("order") for r in results if r.get("kind") == "fmm"}):
            tp = [r["time_per_particle_us"] for r in results
                  if r.get("kind") == "fmm" and r["dist"] == dist and r.get("order") == order
                  and 1e4 <= r["n"] <= 1e6 and "error" not in r]
            if len(tp) >= 2:
                out.append(dict(dist=dist, order=order, ratio=max(tp) / min(tp),
                                min_us=min(tp), max_us=max(tp), n_sizes=len(tp)))
    return out


def write_json(tag, meta_, results):
    (OUT / f"{tag}.json").write_text(json.dumps(
        {"meta": meta_, "results": results, "per_particle_ratio": per_particle_ratios(results)},
        indent=1))


def make_table(results, meta):
    import numpy as np

    rows = []
    hdr = ("| dist | N | method | order/eps | time [s] | µs/particle | rel. RMS err | "
           "peak RSS [GiB] | ratio to fmm3dpy |")
    rows.append(hdr)
    rows.append("|" + "---|" * 9)
    f3 = {(r["dist"], r["n"], r["eps"]): r for r in results
          if r.get("kind") == "fmm3d" and "error" not in r}
    for r in sorted(results, key=lambda r: (r["dist"], r["n"], r["kind"],
                                            r.get("order", 0), -r.get("eps", 0))):
        if "error" in r:
            rows.append(f"| {r['dist']} | {r['n']} | {r['kind']} | {r.get('order', r.get('eps', ''))}"
                        f" | {r['error'][:40]} | | | | |")
            continue
        par = r.get("order", r.get("eps", ""))
        ratio = ""
        if r["kind"] == "fmm":
            m = f3.get((r["dist"], r["n"], EPS_FOR_ORDER.get(r["order"])))
            if m:
                ratio = f"{r['time_s'] / m['time_s']:.2f}"
        rows.append(f"| {r['dist']} | {r['n']} | {r['kind']} | {par} | {r['time_s']:.3g} | "
                    f"{r['time_per_particle_us']:.3g} | {r['rel_err']:.2e} | "
                    f"{r['peak_rss_gib']:.2f} | {ratio} |")
    lines = ["", "Time per particle, max/min over N = 10^4 … 10^6 (O(N) means ≤ 2):", ""]
    for c in per_particle_ratios(results):
        lines.append(f"- {c['dist']}, p={c['order']}: {c['ratio']:.2f} "
                     f"({c['min_us']:.3g}–{c['max_us']:.3g} µs/particle, {c['n_sizes']} sizes)")
    head = [f"# lrnn.fmm benchmark ({meta['date']})", "",
            f"Machine: {meta['machine']}; {meta['cpus']} CPU cores"
            + (f", 1-min load average {meta['loadavg_start']:.2f} at the start"
               if meta.get("loadavg_start") is not None else ", shared with other jobs (timings noisy)")
            + ". float64. Medians of "
            f"{meta['repeats']} runs after compilation; each row in its own process "
            "(peak RSS = that process). fmm3dpy computes potentials only (pg=1). "
            "Errors: relative RMS of φ on 2000 random particles against the exact direct sum.",
            ""]
    return "\n".join(head + rows + lines) + "\n", np


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, dist in zip(axes, ("uniform", "plummer")):
        series = {}
        for r in results:
            if r["dist"] != dist or "error" in r:
                continue
            key = (f"lrnn FMM p={r['order']}" if r["kind"] == "fmm" else
                   f"fmm3dpy eps={r['eps']:g}" if r["kind"] == "fmm3d" else "tiled direct")
            series.setdefault(key, []).append((r["n"], r["time_s"]))
        for key, pts in sorted(series.items()):
            pts.sort()
            style = "-o" if key.startswith("lrnn") else ("--s" if "fmm3d" in key else ":^")
            ax.loglog(*zip(*pts), style, label=key, ms=4)
        ns = [1e3, 1e6]
        ax.loglog(ns, [1e-5 * n for n in ns], "k-", lw=0.5, alpha=0.5, label="∝ N")
        ax.set_title(dist)
        ax.set_xlabel("N")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("time [s] (median, after compile)")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="N ≤ 1e5, orders 5 and 12")
    ap.add_argument("--sizes", type=str, default=None)
    ap.add_argument("--orders", type=str, default=None)
    ap.add_argument("--big-orders", type=str, default="5,8,12,14",
                    help="orders of our FMM at N >= 1e6")
    ap.add_argument("--big-eps-orders", type=str, default="5,12",
                    help="orders whose matching fmm3dpy eps is run at N >= 1e6 (minutes each)")
    ap.add_argument("--report", action="store_true", help="only rebuild table/plot from json")
    ap.add_argument("--dists", type=str, default="uniform,plummer")
    ap.add_argument("--direct-max", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--tag", type=str, default="bench")
    ap.add_argument("--kinds", type=str, default="fmm,fmm3d,direct",
                    help="which methods to run (e.g. only 'fmm' after a change to lrnn.fmm)")
    ap.add_argument("--merge", action="store_true",
                    help="replace the matching rows of an existing <tag>.json instead of starting anew")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    sizes = ([int(float(s)) for s in args.sizes.split(",")] if args.sizes else
             [1000, 10000, 100000] if args.quick else [1000, 10000, 100000, 1000000])
    orders = ([int(o) for o in args.orders.split(",")] if args.orders else
              [5, 12] if args.quick else [5, 8, 12, 14])
    big_orders = [int(o) for o in args.big_orders.split(",")]
    big_eps_orders = [int(o) for o in args.big_eps_orders.split(",")]
    load0 = os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    if args.report:
        data = json.loads((OUT / f"{args.tag}.json").read_text())
        write_json(args.tag, data["meta"], data["results"])
        table, _ = make_table(data["results"], data["meta"])
        (OUT / f"{args.tag}.md").write_text(table)
        plot(data["results"], OUT / f"{args.tag}.png")
        print(table)
        return
    old = []
    if args.merge and (OUT / f"{args.tag}.json").exists():
        old = json.loads((OUT / f"{args.tag}.json").read_text())["results"]

    def key(r):
        return (r["kind"], r["dist"], r["n"], r.get("order"), r.get("eps"))

    results = []

    def merged():
        new = {key(r) for r in results}
        return [r for r in old if key(r) not in new] + results

    with open(OUT / f"{args.tag}.log", "a") as log:
        log.write(f"\n=== {time.ctime()} sizes={sizes} orders={orders}\n")
        for n in sizes:
            for dist in args.dists.split(","):
                ords = big_orders if n >= 1_000_000 else orders
                tasks = [dict(kind="fmm", dist=dist, n=n, order=o, repeats=args.repeats)
                         for o in ords]
                eps_ords = big_eps_orders if n >= 1_000_000 else ords
                tasks += [dict(kind="fmm3d", dist=dist, n=n, eps=EPS_FOR_ORDER[o],
                               repeats=args.repeats) for o in eps_ords if o in EPS_FOR_ORDER]
                if n <= args.direct_max:
                    tasks.append(dict(kind="direct", dist=dist, n=n, repeats=args.repeats))
                tasks = [t for t in tasks if t["kind"] in args.kinds.split(",")]
                run_task(dict(kind="ref", dist=dist, n=n), log, args.timeout)
                for t in tasks:
                    r = run_task(t, log, args.timeout)
                    print(json.dumps({k: v for k, v in r.items() if k not in ("times", "plan")}),
                          flush=True)
                    results.append(r)
                    write_json(args.tag, meta(args, load0), merged())
    results = merged()
    table, _ = make_table(results, meta(args, load0))
    (OUT / f"{args.tag}.md").write_text(table)
    plot(results, OUT / f"{args.tag}.png")
    print(table)


def meta(args, load0=None):
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_start": load0,
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "repeats": args.repeats,
            "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
