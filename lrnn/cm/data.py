"""Data sets for the C_m expansion: npz files with one 1-D array per column.

Atom–diatom: ``R, r, theta_deg, u_cm``; diatom–diatom: ``R, r1, r2, theta1_deg,
theta2_deg, phi_deg, u_cm``.  Lengths in bohr, angles in degrees, energies in cm^-1.
"""

from __future__ import annotations

import json

import numpy as np

from lrnn.cm.model import ATOM_DIATOM, COLUMNS, DIATOM_DIATOM, system_of


class DataError(ValueError):
    """A data set that cannot be used (missing column, NaN, R <= 0, ...)."""


def validate(data, system=None, require_u=True, source="data"):
    """Check columns and values; return ``(system, dict of float64 arrays)``."""
    keys = set(data)
    if system is None:
        try:
            system = system_of(data)
        except ValueError:
            need_a, need_d = COLUMNS[ATOM_DIATOM], COLUMNS[DIATOM_DIATOM]
            miss_a = [c for c in need_a if c not in keys]
            miss_d = [c for c in need_d if c not in keys]
            closer, miss = ((ATOM_DIATOM, miss_a) if len(miss_a) <= len(miss_d)
                            else (DIATOM_DIATOM, miss_d))
            raise DataError(f"{source}: missing column(s) {miss} for a {closer} data set "
                            f"(have {sorted(keys)}; atom–diatom needs {list(need_a)}, "
                            f"diatom–diatom needs {list(need_d)}, plus 'u_cm')") from None
    cols = list(COLUMNS[system]) + (["u_cm"] if require_u else [])
    missing = [c for c in cols if c not in keys]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing} for a {system} data set "
                        f"(have {sorted(keys)})")
    out = {}
    n = None
    for c in cols:
        a = np.asarray(data[c], dtype=np.float64).reshape(-1)
        if n is None:
            n = a.size
        elif a.size != n:
            raise DataError(f"{source}: column {c!r} has {a.size} values, expected {n}")
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(f"{source}: column {c!r} has {int(bad.sum())} NaN/inf value(s) "
                            f"(first at row {int(np.argmax(bad))})")
        out[c] = a
    if n == 0:
        raise DataError(f"{source}: no data points")
    for c in [c for c in cols if c in ("R", "r", "r1", "r2")]:
        if (out[c] <= 0).any():
            i = int(np.argmax(out[c] <= 0))
            raise DataError(f"{source}: column {c!r} must be > 0 (bohr); row {i} has "
                            f"{out[c][i]!r}")
    return system, out


def load_npz(path, system=None, require_u=True):
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read as npz ({e})") from None
    return validate(data, system, require_u, source=str(path))


def save_npz(path, data, settings=None):
    """Write the columns to ``path`` and, if given, ``settings`` to ``path + .settings.json``."""
    np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
    if settings is not None:
        with open(str(path) + ".settings.json", "w") as f:
            json.dump(settings, f, indent=1)


def subset(data, idx):
    return {k: np.asarray(v)[idx] for k, v in data.items()}


def split(n, fractions=(0.8, 0.1, 0.1), seed=0):
    """Random index split into len(fractions) parts (the last takes the remainder)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    out, start = [], 0
    for f in fractions[:-1]:
        k = int(round(f * n))
        out.append(perm[start:start + k])
        start += k
    out.append(perm[start:])
    return out


def metrics(u_ref, u_fit):
    """RMSE and MAE (cm^-1), fractions under 1 %, 10 %, 100 % relative error, count."""
    u_ref, u_fit = np.asarray(u_ref, float), np.asarray(u_fit, float)
    err = u_fit - u_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(err) / np.abs(u_ref)
    return dict(n=int(u_ref.size), rmse_cm=float(np.sqrt(np.mean(err**2))),
                mae_cm=float(np.mean(np.abs(err))), max_abs_cm=float(np.max(np.abs(err))),
                frac_rel_lt_1pct=float(np.mean(rel < 0.01)),
                frac_rel_lt_10pct=float(np.mean(rel < 0.1)),
                frac_rel_lt_100pct=float(np.mean(rel < 1.0)))
