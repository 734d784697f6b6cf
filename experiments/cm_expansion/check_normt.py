"""Recompute stored reference points with a looser H3-UCCSD amplitude tolerance and report how
much u moves (the check behind ``gen_pyscf.py --cc-normt-uccsd``).

    OMP_NUM_THREADS=1 python experiments/cm_expansion/check_normt.py \
        experiments/cm_expansion/data/h3_aQZ.jsonl 24 29 --normt-uccsd 1e-8

One JSON line per point (u in cm^-1, energies in Eh, times in s) on stdout.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_pyscf  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("jsonl")
    p.add_argument("idx", type=int, nargs="+")
    p.add_argument("--normt-uccsd", type=float, default=1e-8)
    a = p.parse_args(argv)
    rows = {}
    with open(a.jsonl) as f:
        for line in f:
            d = json.loads(line)
            rows[d["idx"]] = d
    for idx in a.idx:
        if idx not in rows:
            raise SystemExit(f"idx {idx} is not in {a.jsonl}")
        d = rows[idx]
        t0 = time.time()
        e3, e2, e1, ok = gen_pyscf.energies_h3(d["R"], d["r"], d["theta_deg"], d["basis"],
                                               normt=d.get("cc_normt", 1e-8),
                                               normt_uccsd=a.normt_uccsd)
        u = (e3 - e2 - e1) * gen_pyscf.HARTREE_TO_CM1
        print(json.dumps(dict(idx=idx, R=d["R"], normt_uccsd=a.normt_uccsd, u_fast=u,
                              u_ref=d["u_cm"], du=u - d["u_cm"], de3=e3 - d["e3"], ok=ok,
                              sec=round(time.time() - t0, 1), sec_ref=d["seconds"])),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
