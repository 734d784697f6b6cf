r"""Calibration of a committee's force uncertainty (Tan et al., npj Comput. Mater. 9, 225 (2023)).

A committee of K models predicts member forces :math:`F^{(k)}_{i\alpha}`; its prediction is
the mean :math:`\bar F_{i\alpha}` and its uncertainty the spread

.. math::

    \sigma_{i\alpha} = \Big[\tfrac1K\sum_k (F^{(k)}_{i\alpha} - \bar F_{i\alpha})^2\Big]^{1/2},
    \qquad d_i = \Big[\tfrac1K\sum_k |F^{(k)}_i - \bar F_i|^2\Big]^{1/2}

(per component, and per atom: DP-GEN's force deviation, whose maximum over atoms is the
*model deviation*).  With errors :math:`\delta_{i\alpha} = \bar F_{i\alpha} - F^{\rm ref}_{i\alpha}`:

* **force Spearman**: the rank correlation, over structures, between the largest atomic
  error :math:`\max_i|\delta_i|` and the largest atomic deviation :math:`\max_i d_i`;
* **miscalibration area**: each component read as Gaussian :math:`N(0, (s\sigma)^2)`; for
  a confidence level p the expected fraction of errors inside the central interval
  :math:`|\delta| \le s\sigma\,\Phi^{-1}(\tfrac{1+p}2)` is p; the area is
  :math:`\int_0^1 |p_{\rm obs}(p) - p|\,dp` (0 = calibrated, 0.5 = worst);
* **member error correlation** :math:`\bar\rho`: the mean over member pairs of the
  Pearson correlation of their force-component errors :math:`F^{(k)} - F^{\rm ref}`.  For K
  members whose errors have variance v and pairwise correlation ρ, the committee's squared
  error is :math:`v[\rho + (1-\rho)/K]` while its squared spread is :math:`v(1-\rho)(1-1/K)`:
  the spread sees only the independent part of the errors, so a committee with ρ near 1
  cannot rank its own errors whatever its K;
* **NLL**: :math:`\langle \tfrac12\log(2\pi s^2\sigma^2) + \delta^2/(2 s^2\sigma^2)\rangle`
  per component, for s = 1 and for the scale s fitted on validation data
  (:func:`lrnn.train.trainer.calibrate_committee`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import spearmanr

#: smallest σ (eV/Å) used in ratios: a committee that agrees to rounding is not infinitely sure
SIGMA_FLOOR = 1e-8


def spread(f_members, mask):
    """Per-component σ (M, N, 3) and per-atom deviation d (M, N) (eV/Å; 0 on padding) of
    member forces ``f_members`` (K, M, N, 3)."""
    dev = f_members - f_members.mean(axis=0)
    sigma = np.sqrt(np.mean(dev**2, axis=0))
    d = np.sqrt(np.mean(np.sum(dev**2, axis=-1), axis=0))
    return np.where(mask[..., None], sigma, 0.0), np.where(mask, d, 0.0)


def force_spearman(err, d, mask) -> float:
    """Spearman correlation over structures of max_i |δ_i| and max_i d_i (``err`` (M, N, 3))."""
    e_max = np.where(mask, np.linalg.norm(err, axis=-1), 0.0).max(axis=1)
    d_max = np.where(mask, d, 0.0).max(axis=1)
    if len(e_max) < 3:
        raise ValueError(f"the force Spearman correlation needs at least 3 structures, got {len(e_max)}")
    return float(spearmanr(e_max, d_max).statistic)


def calibrated_spearman(f_members, mask, scale: float = 1.0, draws: int = 20, seed: int = 0):
    r"""The force Spearman a committee would reach if its errors were exactly its claimed
    Gaussians: errors drawn as :math:`N(0, (s\sigma_{i\alpha})^2)` per component, ranked
    against the same deviations; (mean, std) over ``draws``.  A reference, not a bound: it
    measures how much the deviation varies between structures (near 0 when every structure
    has the same σ), and what the Spearman of a committee calibrated in that sense would be."""
    sigma, d = spread(f_members, mask)
    rng = np.random.default_rng(seed)
    r = [force_spearman(rng.normal(size=sigma.shape) * sigma * scale, d, mask) for _ in range(draws)]
    return float(np.mean(r)), float(np.std(r))


def member_error_correlation(f_members, f_ref, mask) -> float:
    """Mean over member pairs of the Pearson correlation of their force-component errors
    (see module docstring); ``f_members`` (K, M, N, 3), ``f_ref`` (M, N, 3), padding masked."""
    err = (f_members - f_ref)[:, mask].reshape(f_members.shape[0], -1)
    c = np.corrcoef(err)
    return float(c[~np.eye(len(c), dtype=bool)].mean())


def species_sigma_scales(err, sigma, mask, numbers) -> dict[int, float]:
    r"""One σ scale per element, the one-parameter recalibration fitted per species:
    :math:`s_Z^2 = \langle \delta_{i\alpha}^2/\sigma_{i\alpha}^2 \rangle` over the force
    components of the atoms of element Z (the NLL minimiser for that element).  ``err``,
    ``sigma`` (M, N, 3) eV/Å; ``numbers`` (N,) or (M, N); fit on validation data."""
    z = np.broadcast_to(numbers, mask.shape)
    out = {}
    for el in np.unique(z[mask]):
        m = mask & (z == el)
        out[int(el)] = float(np.sqrt(np.mean((err[m] / np.maximum(sigma[m], SIGMA_FLOOR)) ** 2)))
    return out


def rank_diagnostics(err, d, mask) -> dict:
    """How well the per-atom deviations ``d`` (M, N) rank the errors ``err`` (M, N, 3) at
    several levels: the force Spearman (max error against max deviation, per structure);
    max error against the mean deviation; mean error against mean deviation; over all atoms
    pooled (per-atom error norm against d); and the fraction of structures whose largest
    error sits on the atom of largest deviation."""
    en = np.where(mask, np.linalg.norm(err, axis=-1), 0.0)
    d = np.where(mask, d, 0.0)
    n = mask.sum(axis=1)
    rho = lambda a, b: float(spearmanr(a, b).statistic)  # noqa: E731
    return {"max_error_max_deviation": force_spearman(err, d, mask),
            "max_error_mean_deviation": rho(en.max(axis=1), d.sum(axis=1) / n),
            "mean_error_mean_deviation": rho(en.sum(axis=1) / n, d.sum(axis=1) / n),
            "per_atom": rho(en[mask], d[mask]),
            "argmax_agreement": float(np.mean(en.argmax(axis=1) == d.argmax(axis=1)))}


def miscalibration_area(err, sigma, n_levels: int = 101) -> float:
    """Area between observed and expected coverage of Gaussian intervals (see module docstring);
    ``err`` and ``sigma`` flat arrays of components."""
    err, sigma = np.abs(np.ravel(err)), np.maximum(np.ravel(sigma), SIGMA_FLOOR)
    p = np.linspace(0.0, 1.0, n_levels)
    z = ndtri(np.clip((1.0 + p) / 2.0, 0.5, 1.0 - 1e-12))
    ratio = np.sort(err / sigma)
    observed = np.searchsorted(ratio, z, side="right") / len(ratio)
    return float(np.trapezoid(np.abs(observed - p), p))


def gaussian_nll(err, sigma, scale: float = 1.0) -> float:
    """Mean Gaussian negative log-likelihood per component (σ in eV/Å, scaled by ``scale``)."""
    s = np.maximum(np.ravel(sigma), SIGMA_FLOOR) * scale
    e = np.ravel(err)
    return float(np.mean(0.5 * np.log(2 * np.pi * s**2) + e**2 / (2 * s**2)))


def committee_metrics(f_members, f_ref, mask, scale: float | None = None) -> dict:
    """Calibration metrics of member forces (K, M, N, 3) against references (M, N, 3)
    (eV/Å); ``scale``: the σ scale fitted on validation data (NLL and area reported with it)."""
    if f_members.ndim != 4 or f_members.shape[0] < 2:
        raise ValueError(f"committee metrics need member forces of shape (K >= 2, M, N, 3), got {f_members.shape}")
    sigma, d = spread(f_members, mask)
    err = f_members.mean(axis=0) - f_ref
    e, s = err[mask], sigma[mask]
    out = {"force_spearman": force_spearman(err, d, mask), "miscalibration_area": miscalibration_area(e, s),
           "nll": gaussian_nll(e, s), "member_error_correlation": member_error_correlation(f_members, f_ref, mask),
           "mean_force_std": float(np.mean(s)),
           "mean_model_deviation": float(d.max(axis=1).mean())}
    if scale is not None:
        out.update(force_std_scale=float(scale), nll_recalibrated=gaussian_nll(e, s, scale),
                   miscalibration_area_recalibrated=miscalibration_area(e, s * scale),
                   calibrated_spearman=calibrated_spearman(f_members, mask, scale))
    return out
