"""Counterpoise-corrected CCSD(T) long-range energies for H + H2 and Li + Li2 (PySCF).

    OMP_NUM_THREADS=1 nohup python experiments/cm_expansion/gen_pyscf.py h3 \
        --out experiments/cm_expansion/data/h3_aTZ.jsonl --n 1000 &

Resumable and crash-safe: one JSON line is appended (and flushed, fsync'ed) per point;
on restart the points already in the file are skipped (the point list is a deterministic
function of --seed, so the same list is regenerated). The settings are written beside the
output as ``<out>.settings.json``.

Protocol (issue 4):
  * h3:  UHF -> UCCSD(T) for H3 (doublet), RHF -> RCCSD for H2 (two electrons: CCSD is
         exact in the basis, (T) vanishes) and UHF for H, each in the full trimer basis
         (ghost atoms); aug-cc-pVTZ; SCF conv_tol 1e-12, CC conv_tol 1e-12 and amplitude
         conv_tol_normt 1e-10 (--cc-normt; 1e-8 left ~2e-10 Eh, 2 % of u at R = 30 bohr:
         --tighten recomputes such points); no density fitting.  The UHF of H3 is started from the RHF(H2)+UHF(H) density so that the
         reference stays separable (no spurious spin-symmetry breaking of stretched H2).
  * li3: quartet Li3 (Li2 in the a^3Sigma_u^+ triplet + Li 2S), UHF -> UCCSD(T) for all
         three fragments, frozen 1s cores, aug-cc-pVDZ for the bulk.

u = E(trimer) - E(diatom, trimer basis) - E(atom, trimer basis), in cm^-1.
Jacobi coordinates: atom at R along the axis at angle theta from the diatom axis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from lrnn.units import HARTREE_TO_CM1

RANGES = {
    "h3": dict(R=(9.6, 18.3), r=(1.0, 4.0), R_extra=(20.0, 30.0), scan_r=1.4,
               basis="aug-cc-pVTZ"),
    "li3": dict(R=(20.0, 40.0), r=(4.0, 9.4), R_extra=(45.0, 60.0), scan_r=7.8,
                basis="aug-cc-pVDZ"),
}


def geometry(R, r, theta_deg):
    """Cartesian positions (bohr): diatom along z centred at 0, atom at R(sin t, 0, cos t)."""
    t = np.deg2rad(theta_deg)
    a = np.array([0.0, 0.0, -r / 2])
    b = np.array([0.0, 0.0, r / 2])
    c = np.array([R * np.sin(t), 0.0, R * np.cos(t)])
    return a, b, c


def _mol(el, coords, ghost, basis, spin):
    from pyscf import gto

    atoms = []
    for x, g in zip(coords, ghost):
        sym = f"ghost-{el}" if g else el
        atoms.append([sym, tuple(x)])
    return gto.M(atom=atoms, basis=basis, unit="Bohr", spin=spin, verbose=0,
                 max_memory=4000)


STALL_ACCEPT = 1e-8
STALL_ACCEPT_DE = 1e-11  # Eh, spread of E_corr over the last STALL_WINDOW cycles
STALL_WINDOW = 100
DIAG = []  # per-CC diagnostics of the current point (written into records that did not converge)


def _run_cc(c):
    """Run a CC kernel, recording E_corr each cycle; return whether it converged (_cc_ok)."""
    hist = []
    c.callback = lambda env: hist.append(float(env["eccsd"]))
    eris = c.ao2mo()  # kept for _cc_ok's residual: the transform is not repeated
    c.kernel(eris=eris)
    return _cc_ok(c, eris, hist)


def _cc_ok(c, eris, e_hist=()):
    """CC convergence: pyscf's own test, or, when the amplitudes stall after max_cycle,

    * an amplitude residual below STALL_ACCEPT (a soft mode of the stretched diatom creeps
      down ~1 % a cycle while the energy no longer changes, |ΔE| < 1e-15 Eh a cycle), or
    * E_corr spread below STALL_ACCEPT_DE over the last STALL_WINDOW cycles (Li3 with a
      compressed triplet Li2 in aug-cc-pVTZ: the plain update grows one mode ~1 % a cycle
      that DIIS does not remove, residual ~1e-6 after 300 cycles, while E_corr of idx 39
      agreed to 7e-12 Eh with a run level-shifted by 0.2 Eh).
    """
    if c.converged:
        return True
    t1, t2 = c.update_amps(c.t1, c.t2, eris)
    res = np.linalg.norm(c.amplitudes_to_vector(t1, t2) - c.amplitudes_to_vector(c.t1, c.t2))
    tail = list(e_hist)[-STALL_WINDOW:]
    spread = max(tail) - min(tail) if tail else None
    flat = len(tail) == STALL_WINDOW and spread < STALL_ACCEPT_DE
    DIAG.append(dict(cc=type(c).__name__, nelectron=int(c.mol.nelectron), residual=float(res),
                     e_spread=spread, cycles=len(e_hist)))
    return bool(res < STALL_ACCEPT or flat)


def energies_h3(R, r, theta_deg, basis, conv=1e-12, normt=1e-10, conv_grad=None,
                normt_uccsd=None):
    """CP-corrected H3 energies (Eh).  ``normt_uccsd`` (default ``normt``) is the amplitude
    tolerance of the H3 UCCSD alone: its amplitudes creep (~3 % a cycle) long after the energy
    has settled, while the two-electron RCCSD energy still moves at a residual of 1e-8."""
    from pyscf import cc, scf

    a, b, c = geometry(R, r, theta_deg)
    # H2 (ghost H): RHF -> RCCSD (exact for 2 electrons in the basis)
    m2 = _mol("H", [a, b, c], [False, False, True], basis, 0)
    mf2 = scf.RHF(m2)
    mf2.conv_tol = conv
    mf2.conv_tol_grad = conv_grad
    mf2.kernel()
    cc2 = cc.RCCSD(mf2)
    cc2.conv_tol = conv
    cc2.conv_tol_normt = normt
    cc2.max_cycle = 300
    ok2 = _run_cc(cc2)
    e2 = cc2.e_tot
    # H (ghost H2): UHF, one electron -> exact in the basis
    m1 = _mol("H", [a, b, c], [True, True, False], basis, 1)
    mf1 = scf.UHF(m1)
    mf1.conv_tol = conv
    mf1.conv_tol_grad = conv_grad
    mf1.kernel()
    e1 = mf1.e_tot
    # H3 doublet: UHF from the separable guess, then UCCSD(T)
    m3 = _mol("H", [a, b, c], [False, False, False], basis, 1)
    dm2 = mf2.make_rdm1()
    dm1 = mf1.make_rdm1()
    dm0 = np.array([dm2 / 2 + dm1[0], dm2 / 2 + dm1[1]])
    mf3 = scf.UHF(m3)
    mf3.conv_tol = conv
    mf3.conv_tol_grad = conv_grad
    mf3.kernel(dm0)
    cc3 = cc.UCCSD(mf3)
    cc3.conv_tol = conv
    cc3.conv_tol_normt = normt if normt_uccsd is None else normt_uccsd
    cc3.max_cycle = 300
    ok3 = _run_cc(cc3)
    et = cc3.ccsd_t()
    e3 = cc3.e_tot + et
    ok = bool(mf2.converged and mf1.converged and mf3.converged and ok2 and ok3)
    return e3, e2, e1, ok


def energies_li3(R, r, theta_deg, basis, conv=1e-12, normt=1e-10, conv_grad=None):
    from pyscf import cc, scf

    a, b, c = geometry(R, r, theta_deg)

    def uccsd_t(mol, dm0=None, ncore=0):
        mf = scf.UHF(mol)
        mf.conv_tol = conv
        mf.conv_tol_grad = conv_grad
        mf.max_cycle = 200
        mf.kernel(dm0)
        if mol.nelectron - 2 * ncore <= 1:
            return mf.e_tot, mf, bool(mf.converged)
        c_ = cc.UCCSD(mf, frozen=ncore)
        c_.conv_tol = conv
        c_.conv_tol_normt = normt
        c_.max_cycle = 300
        ok = _run_cc(c_)
        et = c_.ccsd_t() if mol.nelectron - 2 * ncore >= 3 else 0.0
        return c_.e_tot + et, mf, bool(mf.converged and ok)

    m2 = _mol("Li", [a, b, c], [False, False, True], basis, 2)
    e2, mf2, ok2 = uccsd_t(m2, ncore=2)
    m1 = _mol("Li", [a, b, c], [True, True, False], basis, 1)
    e1, mf1, ok1 = uccsd_t(m1, ncore=1)
    m3 = _mol("Li", [a, b, c], [False, False, False], basis, 3)
    d2, d1 = mf2.make_rdm1(), mf1.make_rdm1()
    e3, _, ok3 = uccsd_t(m3, dm0=np.array([d2[0] + d1[0], d2[1] + d1[1]]), ncore=3)
    return e3, e2, e1, bool(ok1 and ok2 and ok3)


def point_list(system, n, seed):
    """Deterministic list: R-scans first (for C6/C8), then random points with every 10th
    one outside the fitted R range (extrapolation check)."""
    rg = RANGES[system]
    pts = []
    for th in (0.0, 90.0, 180.0):
        for R in (10.0, 12.0, 14.0, 16.0, 18.0, 22.0, 26.0, 30.0) if system == "h3" else \
                (20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 50.0, 60.0):
            pts.append(dict(kind="scan", R=R, r=rg["scan_r"], theta_deg=th))
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % 10 == 9:
            R = rng.uniform(*rg["R_extra"])
            kind = "extra"
        else:
            R = rng.uniform(*rg["R"])
            kind = "train"
        r = rng.uniform(*rg["r"])
        th = float(np.rad2deg(np.arccos(rng.uniform(-1, 1))))
        pts.append(dict(kind=kind, R=float(R), r=float(r), theta_deg=th))
    return pts


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["h3", "li3"])
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--basis", default=None)
    p.add_argument("--only", default=None, help="only points of this kind (scan/train/extra)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many new points")
    p.add_argument("--cc-normt", type=float, default=1e-10,
                   help="CC amplitude convergence (conv_tol_normt); 1e-8 (the first sessions' "
                        "points) leaves ~2e-10 Eh of error, 2 %% of u at R = 30 bohr for H3")
    p.add_argument("--cc-normt-uccsd", type=float, default=None,
                   help="h3 only: conv_tol_normt of the H3 UCCSD (default --cc-normt); 1e-8 "
                        "moved u by <= 5e-6 cm^-1 against 1e-10 on two aQZ points and cut "
                        "their cost 1.6-2.7x (check_normt.py, README)")
    p.add_argument("--tighten", action="store_true",
                   help="recompute points whose record has a looser --cc-normt (records "
                        "without the field were made with 1e-8); the last record per idx wins")
    p.add_argument("--retry-unconverged", action="store_true",
                   help="recompute points whose last record has converged=false (with the "
                        "stalled-amplitude acceptance of _cc_ok)")
    p.add_argument("--skip", default="",
                   help="comma-separated idx not to compute or retry (e.g. a point whose stalled CC "
                        "was already retried and recorded)")
    p.add_argument("--shard", default="0/1",
                   help="I/N: only points with idx %% N == I (run N processes on one --out; "
                        "each appends whole lines)")
    a = p.parse_args(argv)
    shard, n_shards = (int(v) for v in a.shard.split("/"))
    if not 0 <= shard < n_shards:
        raise SystemExit(f"--shard {a.shard}: need 0 <= I < N")
    if a.cc_normt_uccsd is not None and a.system != "h3":
        raise SystemExit("--cc-normt-uccsd applies to h3 only")
    basis = a.basis or RANGES[a.system]["basis"]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    settings = dict(system=a.system, basis=basis, n=a.n, seed=a.seed, ranges=RANGES[a.system],
                    method=("CP-corrected UHF-UCCSD(T) (H3) / RHF-RCCSD (H2) / UHF (H)"
                            if a.system == "h3" else
                            "CP-corrected UHF-UCCSD(T), frozen 1s, quartet Li3, triplet Li2"),
                    conv_tol=1e-12, cc_conv_tol_normt=a.cc_normt,
                    cc_stalled_amplitudes_accepted_below=STALL_ACCEPT,
                    cc_stalled_energy_spread_accepted_below=dict(Eh=STALL_ACCEPT_DE,
                                                                 cycles=STALL_WINDOW),
                    density_fitting=False,
                    units=dict(length="bohr", energy="cm^-1"),
                    script=os.path.relpath(__file__), pyscf=__import__("pyscf").__version__,
                    omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    if a.system == "h3":
        settings["cc_conv_tol_normt_h3_uccsd"] = a.cc_normt_uccsd or a.cc_normt
    with open(a.out + ".settings.json", "w") as f:
        json.dump(settings, f, indent=1)
    done = set()
    if os.path.exists(a.out):
        with open(a.out) as f:
            for line in f:
                try:
                    d = json.loads(line)
                    redo = ((a.tighten and d.get("cc_normt", 1e-8) > a.cc_normt)
                            or (a.retry_unconverged and not d.get("converged", True)))
                    (done.discard if redo else done.add)(d["idx"])
                except Exception:
                    pass
    done |= {int(v) for v in a.skip.split(",") if v.strip()}  # --skip: never (re)computed
    fn = energies_h3 if a.system == "h3" else energies_li3
    cc_kw = {} if a.cc_normt_uccsd is None else dict(normt_uccsd=a.cc_normt_uccsd)
    new = 0
    with open(a.out, "a") as f:
        for idx, pt in enumerate(point_list(a.system, a.n, a.seed)):
            if idx in done or idx % n_shards != shard or (a.only and pt["kind"] != a.only):
                continue
            t0 = time.time()
            DIAG.clear()
            e3, e2, e1, ok = fn(pt["R"], pt["r"], pt["theta_deg"], basis, normt=a.cc_normt, **cc_kw)
            u = (e3 - e2 - e1) * HARTREE_TO_CM1
            rec = dict(idx=idx, **pt, u_cm=u, e3=e3, e2=e2, e1=e1, converged=ok,
                       basis=basis, cc_normt=a.cc_normt, **{"cc_" + k: v for k, v in cc_kw.items()},
                       seconds=round(time.time() - t0, 2))
            if not ok:
                rec["stalled_cc"] = list(DIAG)  # empty: an SCF did not converge
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            print(json.dumps(rec), flush=True)
            new += 1
            if a.limit and new >= a.limit:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
