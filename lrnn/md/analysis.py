"""Analysis of MD logs: the energy drift of an NVE run and the plot of energies and
temperature versus time (the PNG ``lrnn md`` writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def energy_drift(time_fs, etot_eV, n_atoms: int) -> dict:
    """Linear drift (meV/atom/ps) of the total energy and its RMS fluctuation about the
    linear fit and about the mean (meV/atom)."""
    t = np.asarray(time_fs, np.float64) / 1000.0
    e = np.asarray(etot_eV, np.float64) * 1000.0 / n_atoms
    slope, icpt = np.polyfit(t, e, 1)
    return {"drift_meV_per_atom_per_ps": float(slope),
            "rms_fluctuation_meV_per_atom": float(np.sqrt(np.mean((e - (slope * t + icpt)) ** 2))),
            "std_meV_per_atom": float(np.std(e)),
            "max_abs_deviation_meV_per_atom": float(np.max(np.abs(e - e[0])))}


def plot_log(csv_path, png_path, title: str = ""):
    """Energy (E_pot, E_kin, E_tot relative to their first value) and temperature versus time."""
    import matplotlib  # optional and slow to import: only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.genfromtxt(csv_path, delimiter=",", names=True)
    data = np.atleast_1d(data)
    fig, ax = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    if data.size:
        t = data["time_fs"] / 1000.0
        for key, lab in (("etot_eV", "E_tot"), ("epot_eV", "E_pot"), ("ekin_eV", "E_kin")):
            ax[0].plot(t, (data[key] - data[key][0]) * 1000.0, lw=0.8, label=lab)
        ax[1].plot(t, data["temperature_K"], lw=0.8, color="C3")
    ax[0].set_ylabel("E - E(0) (meV)")
    ax[0].legend(loc="best", fontsize=8)
    ax[1].set(xlabel="time (ps)", ylabel="temperature (K)")
    for a in ax:
        a.grid(alpha=0.3)
    if title:
        ax[0].set_title(title, fontsize=9)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
