"""Calibration metrics (lrnn.uncertainty) against independent references."""

import numpy as np
import pytest
from scipy import integrate, stats

from lrnn import uncertainty


def test_miscalibration_area_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 0.5, 200_000)
    err = rng.normal(size=sigma.size) * sigma
    assert uncertainty.miscalibration_area(err, sigma) < 0.005
    # errors twice as large as claimed: observed coverage 2Φ(z_p / 2) - 1 at level p
    def gap(p):
        z = stats.norm.ppf((1 + p) / 2)
        return abs(2 * stats.norm.cdf(z / 2) - 1 - p)
    expected = integrate.quad(gap, 0, 1 - 1e-12, limit=200)[0]
    assert uncertainty.miscalibration_area(2 * err, sigma) == pytest.approx(expected, abs=0.005)


def test_nll_matches_scipy():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.1, 1.0, 1000)
    err = rng.normal(size=1000)
    ref = -np.mean(stats.norm.logpdf(err, scale=1.7 * sigma))
    assert uncertainty.gaussian_nll(err, sigma, 1.7) == pytest.approx(ref, rel=1e-12)


def test_committee_metrics_on_a_synthetic_committee():
    """Members scatter around a prediction whose error grows with their spread: the
    Spearman correlation of the per-structure maxima is high and matches scipy's."""
    rng = np.random.default_rng(2)
    k, m, n = 4, 60, 5
    scale = rng.uniform(0.01, 1.0, m)[:, None, None]  # per-structure difficulty
    truth = rng.normal(size=(m, n, 3))
    members = truth + scale * rng.normal(size=(k, m, n, 3))
    mask = np.ones((m, n), bool)
    mask[0, -1] = False  # a padding slot
    res = uncertainty.committee_metrics(members, truth, mask, scale=1.3)
    sigma, d = uncertainty.spread(members, mask)
    err = members.mean(0) - truth
    e_max = np.where(mask, np.linalg.norm(err, axis=-1), 0).max(1)
    assert res["force_spearman"] == pytest.approx(stats.spearmanr(e_max, d.max(1)).statistic, abs=1e-12)
    assert res["force_spearman"] > 0.8
    np.testing.assert_allclose(sigma[1], members[:, 1].std(axis=0))
    assert sigma[0, -1].sum() == 0 and d[0, -1] == 0
    assert set(res) >= {"miscalibration_area", "nll", "nll_recalibrated", "miscalibration_area_recalibrated"}
    with pytest.raises(ValueError, match="K >= 2"):
        uncertainty.committee_metrics(members[:1], truth, mask)


def test_calibrated_spearman_follows_the_spread_between_structures():
    """Structures whose committees disagree by the same amount cannot be ranked (ceiling near
    0); a spread that varies 100x between structures ranks them almost perfectly."""
    rng = np.random.default_rng(3)
    m, n = 200, 5
    mask = np.ones((m, n), bool)
    sign = np.array([1.0, -1.0, 1.0, -1.0])[:, None, None, None]  # σ = 0.1 eV/Å, to 0.1 % per structure
    same = uncertainty.calibrated_spearman(0.1 * sign * (1 + 1e-3 * rng.random((1, m, 1, 1))), mask)[0]
    assert abs(same) < 0.2
    base = rng.normal(size=(4, m, n, 3))
    width = np.logspace(-2, 0, m)[None, :, None, None]  # σ from 0.01 to 1 eV/Å
    varied, std = uncertainty.calibrated_spearman(width * base, mask)
    assert varied > 0.9 and std < 0.05


def test_member_error_correlation_recovers_the_shared_part():
    """Member errors built as sqrt(rho) * shared + sqrt(1 - rho) * own have pairwise
    correlation rho; the committee's mean squared spread is then v (1 - rho)(1 - 1/K)."""
    rng = np.random.default_rng(4)
    k, m, n, rho = 4, 400, 6, 0.8
    mask = np.ones((m, n), bool)
    mask[:, -1] = False  # padding: garbage there must not count
    truth = rng.normal(size=(m, n, 3))
    shared, own = rng.normal(size=(m, n, 3)), rng.normal(size=(k, m, n, 3))
    members = truth + 0.1 * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)
    members[:, :, -1] = 1e3 * rng.normal(size=(k, m, 3))
    assert uncertainty.member_error_correlation(members, truth, mask) == pytest.approx(rho, abs=0.01)
    sigma, _ = uncertainty.spread(members, mask)
    assert np.mean(sigma[mask] ** 2) == pytest.approx(0.01 * (1 - rho) * (1 - 1 / k), rel=0.03)
    res = uncertainty.committee_metrics(members, truth, mask)
    assert res["member_error_correlation"] == pytest.approx(rho, abs=0.01)


def test_species_sigma_scales_recover_per_element_miscalibration():
    """Errors drawn with 3σ on hydrogen and 0.5σ on carbon: the per-element scales are 3 and
    0.5 (to sampling error), padding ignored."""
    rng = np.random.default_rng(5)
    m, n = 400, 6
    numbers = np.array([1, 1, 6, 6, 6, 0])
    mask = np.broadcast_to(numbers > 0, (m, n)).copy()
    sigma = rng.uniform(0.05, 0.5, (m, n, 3))
    true = np.where(numbers == 1, 3.0, 0.5)[None, :, None]
    err = rng.normal(size=sigma.shape) * sigma * true
    err[:, -1] = 1e3  # padding: must not enter any scale
    s = uncertainty.species_sigma_scales(err, sigma, mask, numbers)
    assert set(s) == {1, 6}
    assert s[1] == pytest.approx(3.0, rel=0.05) and s[6] == pytest.approx(0.5, rel=0.05)


def test_rank_diagnostics_against_direct_evaluation():
    """Deviations equal to the error norms rank perfectly where both sides aggregate alike; for random data
    each entry equals scipy's Spearman of the aggregates computed here by hand."""
    rng = np.random.default_rng(6)
    m, n = 50, 7
    mask = np.ones((m, n), bool)
    mask[:, -2:] = rng.random((m, 2)) < 0.5  # ragged structures
    err = rng.normal(size=(m, n, 3)) * rng.uniform(0.1, 2.0, (m, 1, 1))
    norm = np.linalg.norm(err, axis=-1)
    perfect = uncertainty.rank_diagnostics(err, np.where(mask, norm, 0.0), mask)
    for k in ("max_error_max_deviation", "mean_error_mean_deviation", "per_atom", "argmax_agreement"):
        assert perfect[k] == pytest.approx(1.0), k  # max error against mean deviation need not be 1
    d = rng.uniform(0.0, 1.0, (m, n))
    r = uncertainty.rank_diagnostics(err, d, mask)
    e_max = [norm[j][mask[j]].max() for j in range(m)]
    d_mean = [d[j][mask[j]].mean() for j in range(m)]
    e_mean = [norm[j][mask[j]].mean() for j in range(m)]
    assert r["max_error_mean_deviation"] == pytest.approx(stats.spearmanr(e_max, d_mean).statistic, abs=1e-12)
    assert r["mean_error_mean_deviation"] == pytest.approx(stats.spearmanr(e_mean, d_mean).statistic, abs=1e-12)
    assert r["per_atom"] == pytest.approx(stats.spearmanr(norm[mask], d[mask]).statistic, abs=1e-12)
    agree = np.mean([np.argmax(np.where(mask[j], norm[j], -1)) == np.argmax(np.where(mask[j], d[j], -1))
                     for j in range(m)])
    assert r["argmax_agreement"] == pytest.approx(agree)
