"""Training metrics: validation errors, the append-only metrics file (CSV or JSON lines)
the trainer writes one row per validation to, and its reader (for plots and notebooks)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def error_metrics(e_pred, e_ref, n_atoms, f_pred=None, f_ref=None, mask=None):
    """Energy MAE/RMSE (per structure and per atom) and, given forces, force-component MAE/RMSE."""
    de = e_pred - e_ref
    out = {"energy_mae": float(np.mean(np.abs(de))), "energy_rmse": float(np.sqrt(np.mean(de**2))),
           "energy_mae_per_atom": float(np.mean(np.abs(de / n_atoms))),
           "energy_rmse_per_atom": float(np.sqrt(np.mean((de / n_atoms) ** 2)))}
    if f_pred is not None and f_ref is not None:
        df = (f_pred - f_ref)[mask]
        out["force_mae"] = float(np.mean(np.abs(df)))
        out["force_rmse"] = float(np.sqrt(np.mean(df**2)))
    return out


class MetricsWriter:
    """Append-only CSV or JSON-lines metrics; each row flushed at once."""

    def __init__(self, path: Path, fmt: str, resume: bool, enabled: bool = True):
        self.path, self.fmt, self.enabled = path, fmt, enabled
        self.fields = None
        if not enabled:  # another process of a distributed run writes the file
            return
        if resume and path.exists():
            if fmt == "csv":
                with open(path) as fh:
                    self.fields = next(csv.reader(fh), None)
        elif path.exists():
            path.unlink()

    def write(self, row: dict):
        if not self.enabled:
            return
        if self.fmt == "jsonl":
            with open(self.path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            return
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def read_metrics(path) -> list[dict]:
    """The rows of a metrics file written by :class:`MetricsWriter` (numbers as floats)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    with open(path) as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
