"""DeePMD-kit side of experiments/bench_local_models.py; runs in DeePMD-kit's own venv (no lrnn).

    python deepmd_helper.py versions
    python deepmd_helper.py check SYSTEM_DIR                 # dpdata reads the system back
    python deepmd_helper.py predict SYSTEM_DIR OUT_DIR MODEL...  # OUT_DIR/<model stem>.npz: E (eV), F (eV/Å)
    python deepmd_helper.py speed MODEL SYSTEM_DIR --repeats 5
Prints one JSON object on its last line.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def load_system(path):
    path = Path(path)
    types = np.loadtxt(path / "type.raw", dtype=int).reshape(-1)
    coord = np.load(path / "set.000" / "coord.npy")
    return types, coord


def deep_pot(model):
    from deepmd.infer import DeepPot

    return DeepPot(str(model))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["versions", "check", "predict", "speed"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    if a.what == "versions":
        import deepmd
        import dpdata

        out = {"deepmd": deepmd.__version__, "torch": torch.__version__, "dpdata": dpdata.__version__,
               "numpy": np.__version__, "python": sys.version.split()[0], "torch_threads": torch.get_num_threads()}
    elif a.what == "check":
        import dpdata

        s = dpdata.LabeledSystem(a.args[0], fmt="deepmd/npy")
        out = {"frames": s.get_nframes(), "atoms": s.get_natoms(), "atom_names": s["atom_names"],
               "energy_mean_eV": float(np.mean(s["energies"])), "nopbc": bool(s.nopbc)}
    elif a.what == "predict":
        types, coord = load_system(a.args[0])
        out_dir = Path(a.args[1])
        out_dir.mkdir(parents=True, exist_ok=True)
        for model in a.args[2:]:
            dp = deep_pot(model)
            es, fs = [], []
            for i in range(0, len(coord), 100):
                e, f, _ = dp.eval(coord[i:i + 100], None, types.tolist())
                es.append(np.asarray(e).reshape(-1))
                fs.append(np.asarray(f).reshape(len(es[-1]), -1, 3))
            np.savez(out_dir / (Path(model).stem + ".npz"), energy=np.concatenate(es), forces=np.concatenate(fs))
        out = {"predicted": int(len(coord)), "models": len(a.args) - 2}
    else:
        dp = deep_pot(a.args[0])
        types, coord = load_system(a.args[1])
        out = {"torch_threads": torch.get_num_threads()}
        for bs, inner in ((1, 50), (32, 5)):
            x = coord[:bs]
            dp.eval(x, None, types.tolist())  # warm-up
            ts = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                for _ in range(inner):
                    dp.eval(x, None, types.tolist())
                ts.append((time.perf_counter() - t) / inner)
            out[f"ef_ms_batch{bs}"] = 1e3 * statistics.median(ts) / bs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
