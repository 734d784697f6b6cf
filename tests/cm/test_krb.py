import numpy as np
import pytest

from lrnn.cm import krb


def test_properties_interpolate_table():
    p = krb.properties(krb.R_GRID)
    for k, v in krb.TABLE.items():
        np.testing.assert_allclose(p[k], v, rtol=1e-12)
    assert krb.properties(7.65)["mu"] == pytest.approx(0.593 * 0.393430307)


def test_molecule_swap_leaves_every_cm_unchanged():
    rng = np.random.default_rng(1)
    n = 200
    r1, r2 = rng.uniform(5.67, 8.87, n), rng.uniform(5.67, 8.87, n)
    t1, t2, ph = rng.uniform(0, np.pi, n), rng.uniform(0, np.pi, n), rng.uniform(0, np.pi, n)
    a = krb.cm_coefficients(r1, r2, t1, t2, ph)
    b = krb.cm_coefficients(r2, r1, np.pi - t2, np.pi - t1, ph)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def _orient_average(r1, r2, n=24):
    # Gauss–Legendre in cos(theta_i), uniform in phi: exact for these polynomials
    x, w = np.polynomial.legendre.leggauss(n)
    ph = (np.arange(2 * n) + 0.5) * 2 * np.pi / (2 * n)
    C1, C2, PH = np.meshgrid(x, x, ph, indexing="ij")
    W = np.einsum("i,j,k->ijk", w, w, np.full(2 * n, 1.0 / (2 * n))) / 4
    C = krb.cm_coefficients(r1, r2, np.arccos(C1), np.arccos(C2), PH)
    return np.einsum("ijkm,ijk->m", C, W)


@pytest.mark.parametrize("r1,r2", [(7.65, 7.65), (6.0, 8.5)])
def test_orientational_averages(r1, r2):
    avg = _orient_average(r1, r2)
    p1, p2 = krb.properties(r1), krb.properties(r2)
    scale = np.abs(krb.cm_coefficients(r1, r2, 0.3, 1.1, 0.5))
    np.testing.assert_allclose(avg[:3], 0.0, atol=1e-12 * scale[:3].max() + 1e-14)
    expect = (krb.c6_electronic(r1, r2) + p1["mu"] ** 2 * p2["alpha_bar"]
              + p2["mu"] ** 2 * p1["alpha_bar"])
    assert avg[3] == pytest.approx(expect, rel=1e-12)
    if r1 == r2:  # the form: C6_el + 2 mu^2 alpha_bar
        assert avg[3] == pytest.approx(krb.C6_EL_REF + 2 * p1["mu"] ** 2 * p1["alpha_bar"],
                                       rel=1e-12)


def _axes(t1, t2, ph):
    e1 = np.array([np.sin(t1), 0.0, np.cos(t1)])
    e2 = np.array([np.sin(t2) * np.cos(ph), np.sin(t2) * np.sin(ph), np.cos(t2)])
    return e1, e2


def test_general_multipole_formula_equals_closed_forms():
    rng = np.random.default_rng(2)
    r1, r2 = 6.3, 8.0
    P1, P2 = krb.properties(r1), krb.properties(r2)
    Q1 = [0.0, P1["mu"], P1["Theta"], P1["Omega"]]
    Q2 = [0.0, P2["mu"], P2["Theta"], P2["Omega"]]
    for _ in range(5):
        t1, t2, ph = rng.uniform(0, np.pi, 3)
        e1, e2 = _axes(t1, t2, ph)
        R = 25.0
        E = krb.axial_multipole_energy(np.array([0, 0, R]), e1, e2, Q1, Q2, order=5)
        C = krb.cm_coefficients(r1, r2, t1, t2, ph)
        for i, n in enumerate((3, 4, 5)):
            assert -E[n] * R**n == pytest.approx(C[i], rel=1e-10, abs=1e-12)


def test_multipoles_agree_with_explicit_point_charge_coulomb_sum():
    """Point-charge molecules with KRb's mu, Theta, Omega: the Coulomb sum minus the
    C3..C5 terms falls off as R^-6 (the next multipole order)."""
    r1, r2 = 7.0, 8.0
    P1, P2 = krb.properties(r1), krb.properties(r2)
    q1, z1 = krb.point_charges_for_moments([0.0, P1["mu"], P1["Theta"], P1["Omega"]], 1.5)
    q2, z2 = krb.point_charges_for_moments([0.0, P2["mu"], P2["Theta"], P2["Omega"]], 1.5)
    t1, t2, ph = 0.7, 2.1, 1.0
    e1, e2 = _axes(t1, t2, ph)
    C = krb.cm_coefficients(r1, r2, t1, t2, ph)
    res = []
    for R in (200.0, 400.0, 800.0):
        exact = krb.point_charge_energy([0, 0, R], e1, e2, q1, z1, q2, z2)
        multi = -(C[0] / R**3 + C[1] / R**4 + C[2] / R**5)
        assert abs(exact - multi) < 1e-3 * abs(exact)
        res.append((exact - multi) * R**6)
    # the remainder is the R^-6 (and higher) term: R^6 * remainder converges
    assert abs(res[2] - res[1]) < 0.6 * abs(res[1] - res[0]) + 1e-9 * abs(res[2])
    # and the general formula, with the point charges' higher moments, predicts it
    Q1 = [float(np.sum(q1 * z1**k)) for k in range(7)]
    Q2 = [float(np.sum(q2 * z2**k)) for k in range(7)]
    R = 400.0
    E = krb.axial_multipole_energy(np.array([0, 0, R]), e1, e2, Q1, Q2, order=9)
    exact = krb.point_charge_energy([0, 0, R], e1, e2, q1, z1, q2, z2)
    assert sum(E[n] for n in range(6, 10)) == pytest.approx(exact - sum(E[n] for n in (3, 4, 5)),
                                                            rel=1e-5)
    assert sum(E.values()) == pytest.approx(exact, rel=1e-12)


def test_u_lr_units_and_sign():
    # side by side, antiparallel dipoles attract: u < 0; magnitude ~ C6/R^6 at short range
    u = krb.u_lr(20.0, 7.65, 7.65, np.pi / 2, np.pi / 2, np.pi)
    assert u < 0
    C = krb.cm_coefficients(7.65, 7.65, np.pi / 2, np.pi / 2, np.pi)
    assert u == pytest.approx(-219474.6313705 * sum(C[i] / 20.0 ** m
                                                  for i, m in enumerate((3, 4, 5, 6))))
