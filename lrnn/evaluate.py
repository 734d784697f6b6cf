"""Evaluate a checkpoint on a dataset: MAE/RMSE with units, parity plot."""

from __future__ import annotations

import numpy as np

from lrnn import uncertainty, units
from lrnn.data import read
from lrnn.plots import calibration, parity
from lrnn.potential import load as load_potential
from lrnn.system import Dataset
from lrnn.train.data import resolve_path


def evaluate(checkpoint, data, fmt=None, unit: str | None = None, parity_png=None, batch_size: int = 32,
             calibration_png=None, **read_kwargs) -> dict:
    """Errors of the potential at ``checkpoint`` on ``data`` (a path, ``embedded:NAME`` or a
    :class:`~lrnn.system.Dataset`).  Energies in ``unit`` (default: the unit of the training
    data, e.g. kcal/mol for rMD17), forces in ``unit``/Å; force errors are per Cartesian
    component, as in the rMD17 literature.  For a committee also its calibration
    (:func:`lrnn.uncertainty.committee_metrics`: ``force_spearman``,
    ``miscalibration_area``, NLL per component in eV/Å units before and after the
    recalibration fitted on validation data), and with ``calibration_png`` the plots of
    :func:`lrnn.plots.calibration`."""
    pot = load_potential(checkpoint)
    ds = data if isinstance(data, Dataset) else read(resolve_path(data), fmt, **read_kwargs)
    if len(ds) == 0:
        raise ValueError("the evaluation dataset is empty")
    unit = unit or pot.meta.get("report_energy_unit", "eV")
    f = 1.0 / units.energy_factor(unit)
    e_k, f_k, _ = pot.predict_members(ds, batch_size=batch_size)
    committee = pot.committee > 1
    e, frc = (e_k.mean(0), f_k.mean(0)) if committee else (e_k, f_k)
    de = (e - ds.energy) * f
    n = ds.n_atoms
    res = {"n_structures": int(len(ds)), "energy_unit": unit, "force_unit": f"{unit}/Angstrom",
           "energy_mae": float(np.mean(np.abs(de))), "energy_rmse": float(np.sqrt(np.mean(de**2))),
           "energy_mae_per_atom": float(np.mean(np.abs(de / n))),
           "energy_rmse_per_atom": float(np.sqrt(np.mean((de / n) ** 2)))}
    if ds.forces is not None:
        df = ((frc - ds.forces) * f)[ds.mask]
        res.update(force_mae=float(np.mean(np.abs(df))), force_rmse=float(np.sqrt(np.mean(df**2))))
    else:
        res.update(force_mae=None, force_rmse=None)
    if committee:
        res["committee"] = pot.committee
        if ds.forces is not None:
            scale = pot.meta.get("calibration", {}).get("force_std_scale")
            res.update(uncertainty.committee_metrics(f_k, ds.forces, ds.mask, scale))
            if calibration_png:
                sigma, d = uncertainty.spread(f_k, ds.mask)
                err = frc - ds.forces
                e_max = np.where(ds.mask, np.linalg.norm(err, axis=-1), 0).max(1)
                calibration(err[ds.mask], sigma[ds.mask], scale or 1.0, e_max, d.max(1), calibration_png, unit)
                res["calibration_plot"] = str(calibration_png)
    if parity_png:
        parity(ds.energy, e, None if ds.forces is None else ds.forces[ds.mask],
               None if ds.forces is None else frc[ds.mask], parity_png, unit=unit, title=ds.name)
        res["parity_plot"] = str(parity_png)
    return res


def format_table(res: dict, title: str = "") -> str:
    u, fu = res["energy_unit"], res["force_unit"].replace("Angstrom", "Å")
    lines = [title] if title else []
    lines += [f"{'quantity':<28}{'MAE':>12}{'RMSE':>12}  unit", "-" * 62,
              f"{'energy (per structure)':<28}{res['energy_mae']:>12.4f}{res['energy_rmse']:>12.4f}  {u}",
              f"{'energy (per atom)':<28}{res['energy_mae_per_atom']:>12.5f}{res['energy_rmse_per_atom']:>12.5f}  {u}"]
    if res.get("force_mae") is not None:
        lines.append(f"{'force (per component)':<28}{res['force_mae']:>12.4f}{res['force_rmse']:>12.4f}  {fu}")
    lines.append(f"{res['n_structures']} structures")
    return "\n".join(lines)
