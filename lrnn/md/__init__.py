r"""Molecular dynamics with lrnn potentials in `jax-md <https://github.com/jax-md/jax-md>`_.

Units are eV, Å and amu, so jax-md's time unit is :math:`\text{Å}\sqrt{\text{amu}/\text{eV}}
\approx 10.18` fs (ASE's time unit, ``ase.units.fs`` converts); time steps are given in fs.

Modules, from low to high level:

* :mod:`lrnn.md.units` — fs ↔ jax-md time, k_B, atomic masses.
* :mod:`lrnn.md.system` — :class:`MDSystem`: one structure (species, optional cell) bound
  to a potential: jax-md space, neighbour list, species-blocked layout, energy function.
* :mod:`lrnn.md.integrate` — :func:`make_chunk` (a pure chunk of NVE/NVT steps) and
  :class:`Simulation` (runs it, re-allocates on neighbour overflow, stops on NaN with
  :class:`NonFiniteError`).
* :mod:`lrnn.md.driver` — :func:`run_md`, the driver behind ``lrnn md``: trajectory, CSV
  log, plot, progress bar.
* :mod:`lrnn.md.analysis` — :func:`energy_drift`, :func:`plot_log`.

Integration runs in float64 (x64 is switched on here).  ``precision="float64"`` (the
default) evaluates the network in float64 too (the float32 weights are promoted exactly),
which gives the best energy conservation; ``precision="float32"`` evaluates it in float32
(faster, forces carry float32 rounding noise).
"""

from lrnn.md.analysis import energy_drift, plot_log
from lrnn.md.driver import CSV_HEADER, MDResult, read_structure, run_md
from lrnn.md.integrate import (
           Ensemble,
           Frame,
           NonFiniteError,
           Simulation,
           clear_caches,
           initial_momenta,
           make_chunk,
)
from lrnn.md.system import MDSystem
from lrnn.md.units import enable_x64, fs_to_internal, kB, masses_of
from lrnn.potential import check_structure, requires_cell, untrained_potential

__all__ = ["CSV_HEADER", "Ensemble", "Frame", "MDResult", "MDSystem", "NonFiniteError", "Simulation",
           "check_structure", "clear_caches", "enable_x64", "energy_drift", "fs_to_internal", "initial_momenta",
           "kB", "make_chunk", "masses_of", "plot_log", "read_structure", "requires_cell", "run_md",
           "untrained_potential"]
