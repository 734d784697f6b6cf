"""Plots: learning curves and parity plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrnn import units


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, grid_axes, out_png):
    """Grid the given axes, lay out, write ``out_png`` (creating its folder) and close."""
    for a in grid_axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def learning_curve(rows, out_png, unit: str = "eV"):
    """Validation energy and force MAE (in ``unit`` and ``unit``/Å) versus training step;
    ``rows``: the metrics rows (:func:`lrnn.train.metrics.read_metrics`)."""
    if not rows:
        raise ValueError("no metrics rows to plot")
    f = 1.0 / units.energy_factor(unit)
    step = np.array([r["step"] for r in rows])
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].semilogy(step, np.array([r["val_energy_mae_eV"] for r in rows]) * f)
    ax[0].set(xlabel="step", ylabel=f"validation energy MAE ({unit})")
    fm = np.array([r["val_force_mae_eV_per_A"] for r in rows]) * f
    if np.isfinite(fm).any():
        ax[1].semilogy(step, fm)
    ax[1].set(xlabel="step", ylabel=f"validation force MAE ({unit}/Å)")
    return _save(plt, fig, ax, out_png)


def parity(e_ref, e_pred, f_ref, f_pred, out_png, unit: str = "eV", title: str = ""):
    """Predicted versus reference energies (per structure) and force components."""
    f = 1.0 / units.energy_factor(unit)
    plt = _plt()
    fig, ax = plt.subplots(1, 2 if f_ref is not None else 1, figsize=(9, 4), squeeze=False)
    ax = ax[0]
    e0 = np.mean(e_ref)
    x, y = (np.asarray(e_ref) - e0) * f, (np.asarray(e_pred) - e0) * f
    ax[0].plot(x, y, ".", ms=3)
    lim = [min(x.min(), y.min()), max(x.max(), y.max())]
    ax[0].plot(lim, lim, "k--", lw=0.8)
    ax[0].set(xlabel=f"reference E - <E> ({unit})", ylabel=f"predicted E - <E> ({unit})",
              title=f"MAE {np.mean(np.abs(x - y)):.3g} {unit}")
    if f_ref is not None:
        x, y = np.ravel(f_ref) * f, np.ravel(f_pred) * f
        ax[1].plot(x, y, ".", ms=1, alpha=0.4)
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax[1].plot(lim, lim, "k--", lw=0.8)
        ax[1].set(xlabel=f"reference F ({unit}/Å)", ylabel=f"predicted F ({unit}/Å)",
                  title=f"MAE {np.mean(np.abs(x - y)):.3g} {unit}/Å")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, (), out_png)


def calibration(err, sigma, scale, e_max, d_max, out_png, unit: str = "eV"):
    """A committee's calibration: observed against expected coverage of Gaussian intervals
    of the force components (with σ and with the recalibrated sσ), and the largest atomic
    force error against the largest atomic force deviation per structure (both in eV/Å in,
    plotted in ``unit``/Å)."""
    from scipy.special import ndtri

    f = 1.0 / units.energy_factor(unit)
    p = np.linspace(0, 1, 101)
    z = ndtri(np.clip((1 + p) / 2, 0.5, 1 - 1e-12))
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    for s, label in ((1.0, "committee σ"), (scale, f"recalibrated {scale:.2f}σ")):
        r = np.sort(np.abs(np.ravel(err)) / np.maximum(np.ravel(sigma) * s, 1e-12))
        ax[0].plot(p, np.searchsorted(r, z, side="right") / len(r), label=label)
    ax[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    ax[0].set(xlabel="expected fraction inside interval", ylabel="observed fraction", title="force components")
    ax[0].legend()
    ax[1].loglog(np.asarray(d_max) * f, np.asarray(e_max) * f, ".", ms=3)
    ax[1].set(xlabel=f"max atomic force deviation ({unit}/Å)", ylabel=f"max atomic force error ({unit}/Å)",
              title="per structure")
    return _save(plt, fig, ax, out_png)
