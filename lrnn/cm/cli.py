"""``lrnn cm ...``: command-line tools for C_m models.

    lrnn cm evaluate MODEL DATA.npz [--json]

MODEL is a directory written by ``lrnn.cm.save_model`` (config.json + weights.npz).
DATA holds ``R, r, theta_deg, u_cm`` (atom–diatom) or ``R, r1, r2, theta1_deg,
theta2_deg, phi_deg, u_cm`` (diatom–diatom); lengths in bohr, energies in cm^-1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

from lrnn.cm.data import DataError, load_npz, metrics
from lrnn.cm.model import COLUMNS, load_model, system_of


def _parser():
    p = argparse.ArgumentParser(prog="lrnn cm", description="Neural C_m expansion tools")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("evaluate", help="errors of a C_m model on an npz data set")
    e.add_argument("model", help="model directory (config.json + weights.npz)")
    e.add_argument("data", help="npz with R, r, theta_deg, u_cm or R, r1, r2, theta1_deg, "
                                "theta2_deg, phi_deg, u_cm (bohr, degrees, cm^-1)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def evaluate(model_path, data_path):
    """Metrics dict of a saved model on an npz data set (raises ValueError on bad input)."""
    model = load_model(model_path)
    want = model.system
    with np.load(data_path, allow_pickle=False) if _exists(data_path) else _nofile(data_path) as z:
        cols = {k: z[k] for k in z.files}
    try:
        have = system_of(cols)
    except ValueError:
        have = None
    if have is not None and have != want:
        raise DataError(f"{data_path}: a {have} data set (columns {list(COLUMNS[have])}), "
                        f"but the model {model_path} is for {want} "
                        f"(columns {list(COLUMNS[want])})")
    _, data = load_npz(data_path, system=want)
    with jax.enable_x64(True):
        u = np.asarray(model(data))
    out = metrics(data["u_cm"], u)
    out.update(model=str(model_path), data=str(data_path), system=want)
    return out


def _exists(path):
    return os.path.isfile(path)


def _nofile(path):
    raise DataError(f"{path}: no such file")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "evaluate":
        try:
            m = evaluate(args.model, args.data)
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"lrnn cm evaluate: error: {e}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(m))
        else:
            print(f"model   {m['model']} ({m['system']})")
            print(f"data    {m['data']}: {m['n']} points")
            print(f"RMSE    {m['rmse_cm']:.6g} cm^-1")
            print(f"MAE     {m['mae_cm']:.6g} cm^-1")
            print(f"max     {m['max_abs_cm']:.6g} cm^-1")
            print(f"|rel. error| < 1 %:  {100 * m['frac_rel_lt_1pct']:.2f} %")
            print(f"|rel. error| < 10 %: {100 * m['frac_rel_lt_10pct']:.2f} %")
            print(f"count   {m['n']}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
