"""Resolve the ``data`` section of a run config into train/validation/test datasets."""

from __future__ import annotations

from pathlib import Path

from lrnn.data import read, split_indices

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "data" / "embedded"
EMBEDDED = {
    "paracetamol": EMBEDDED_DIR / "rmd17_paracetamol_train01_subset.npz",
    "paracetamol-test": EMBEDDED_DIR / "rmd17_paracetamol_test01_subset.npz",
}
NATIVE_UNIT = {"rmd17": "kcal/mol", "sgdml": "kcal/mol"}


def resolve_path(spec: str, base=".") -> Path:
    """A data path, or ``embedded:NAME`` for data shipped inside lrnn."""
    spec = str(spec)
    if spec.startswith("embedded:"):
        name = spec.split(":", 1)[1]
        if name not in EMBEDDED:
            raise ValueError(f"unknown embedded dataset {name!r}; known: {sorted(EMBEDDED)}")
        return EMBEDDED[name]
    p = Path(spec).expanduser()
    if not p.is_absolute() and not p.exists():
        p = Path(base) / p
    return p


def _read(spec, fmt, data_cfg, base):
    kwargs = {}
    if fmt in ("extxyz", "xyz") or (fmt is None and str(spec).endswith((".xyz", ".extxyz"))):
        kwargs = {k: data_cfg[k] for k in ("energy_unit", "length_unit") if k in data_cfg}
    return read(resolve_path(spec, base), fmt, **kwargs)


def _guess_native(path: Path, fmt) -> str:
    if fmt in NATIVE_UNIT:
        return NATIVE_UNIT[fmt]
    if path.suffix == ".npz":
        return "kcal/mol"
    return "eV"


def load_data(data_cfg: dict, base=".") -> dict:
    """Train/validation (split of ``data.train`` from ``data.seed``) and optional test set."""
    seed = int(data_cfg.get("seed", 0))
    fmt = data_cfg.get("format")
    full = _read(data_cfg["train"], fmt, data_cfg, base)
    if len(full) == 0:
        raise ValueError(f"training data {data_cfg['train']} is empty")
    if "total_charge" in data_cfg:  # formats without a per-structure charge
        full.total_charge[:] = float(data_cfg["total_charge"])
    n_val = int(data_cfg.get("n_val", max(1, len(full) // 20)))
    n_train = int(data_cfg.get("n_train", -1))
    if n_train == -1:
        n_train = len(full) - n_val
    if n_train <= 0:
        raise ValueError(f"no training structures left: {len(full)} available, n_val={n_val}")
    if n_val <= 0:
        raise ValueError("n_val must be >= 1: validation runs every epoch")
    tr_idx, va_idx, rest = split_indices(len(full), [n_train, n_val, -1], seed)
    out = {"train": full.subset(tr_idx), "val": full.subset(va_idx),
           "report_energy_unit": data_cfg.get("report_energy_unit",
                                              _guess_native(resolve_path(data_cfg["train"], base), fmt))}
    if data_cfg.get("test"):
        test = _read(data_cfg["test"], data_cfg.get("test_format", fmt), data_cfg, base)
        if "total_charge" in data_cfg:
            test.total_charge[:] = float(data_cfg["total_charge"])
        n_test = int(data_cfg.get("n_test", -1))
        if n_test != -1 and n_test < len(test):
            test = test.subset(split_indices(len(test), [n_test], seed)[0])
        out["test"] = test
    elif len(rest):
        out["test"] = full.subset(rest)
    if "test" in out and len(out["test"]) == 0:
        raise ValueError("the test set is empty")
    return out
