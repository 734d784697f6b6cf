"""The neural C_m expansion of long-range molecular interactions (Hong, Huang & Zhang).

u_LR = -Σ_m C_m(r, θ, ...) / R^m with a feed-forward network for the C_m, fitted by
Levenberg–Marquardt.  Modules: ``jacobi`` (coordinates), ``model`` (network, save/load),
``fit`` (LM, Adam), ``data`` (npz IO, validation, metrics), ``krb`` (analytic KRb+KRb
reference), ``cli`` (``lrnn cm evaluate``).  Nothing here switches on float64 globally:
enable it in your script (``jax.config.update("jax_enable_x64", True)``).
"""

from lrnn.cm.data import DataError, load_npz, metrics, save_npz, split, subset, validate
from lrnn.cm.jacobi import (
    atom_diatom_invariants,
    atom_diatom_jacobi,
    atom_diatom_positions,
    diatom_diatom_invariants,
    diatom_diatom_jacobi,
    diatom_diatom_positions,
)
from lrnn.cm.model import (
    ATOM_DIATOM,
    DIATOM_DIATOM,
    CmModel,
    cm_values,
    energy,
    init_params,
    load_model,
    make_config,
    save_model,
)

__all__ = [
    "ATOM_DIATOM", "DIATOM_DIATOM", "CmModel", "DataError", "atom_diatom_invariants",
    "atom_diatom_jacobi", "atom_diatom_positions", "cm_values", "diatom_diatom_invariants",
    "diatom_diatom_jacobi", "diatom_diatom_positions", "energy", "init_params", "load_model",
    "load_npz", "make_config", "metrics", "save_model", "save_npz", "split", "subset",
    "validate",
]
