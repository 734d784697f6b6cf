"""Analytic long-range reference for KRb + KRb (atomic units unless stated).

u_LR = -(C3/R^3 + C4/R^4 + C5/R^5 + C6/R^6), with the closed forms of issue 4:
e_i is the K→Rb axis (the dipole direction), theta_i the angle between e_i and R (from
molecule 1 to molecule 2), c_i = cos theta_i, s_i = sin theta_i, A = 2 c1 c2 - s1 s2 cos phi.
The molecular properties versus the bond length r (bohr) are interpolated by not-a-knot
cubic splines (scipy's CubicSpline default) through the tabulated RCCSD(T)/def2-TZVPP
finite-field values.

Also here: ``axial_multipole_energy``, the general electrostatic interaction of two axial
multipole series (any order, by automatic differentiation of 1/R), used to check the
closed forms, and ``point_charge_energy``, an explicit Coulomb sum.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline

from lrnn.units import DEBYE_AU, HARTREE_TO_CM1

R_GRID = np.array([5.67, 6.5, 7.2, 7.65, 8.1, 8.87])
TABLE = {
    "mu": np.array([0.577, 0.567, 0.581, 0.593, 0.603, 0.605]) * DEBYE_AU,
    "alpha_par": np.array([535.0, 616.0, 712.0, 788.0, 873.0, 1029.0]),
    "alpha_perp": np.array([380.0, 385.0, 396.0, 406.0, 418.0, 440.0]),
    "Theta": np.array([11.4, 13.3, 15.1, 16.2, 17.2, 18.2]),
    "Omega": np.array([-41.0, -54.0, -67.0, -76.0, -84.0, -95.0]),
}
C6_EL_REF = 1.28e4  # isotropic electronic dispersion C6 at r1 = r2 = 7.65 bohr
R_REF = 7.65
POWERS = (3, 4, 5, 6)
R_RANGE = (5.67, 8.87)


@lru_cache(maxsize=None)
def _splines():
    return {k: CubicSpline(R_GRID, v) for k, v in TABLE.items()}


def properties(r):
    """dict of mu, alpha_par, alpha_perp, alpha_bar, gamma, Theta, Omega (au) at r (bohr)."""
    r = np.asarray(r, dtype=float)
    p = {k: s(r) for k, s in _splines().items()}
    p["alpha_bar"] = (p["alpha_par"] + 2 * p["alpha_perp"]) / 3
    p["gamma"] = (p["alpha_par"] - p["alpha_perp"]) / (3 * p["alpha_bar"])
    return p


def alpha_bar(r):
    return properties(r)["alpha_bar"]


def cm_coefficients(r1, r2, theta1, theta2, phi):
    """C3, C4, C5, C6 (au), stacked on the last axis; angles in radians."""
    r1, r2, t1, t2, phi = np.broadcast_arrays(*(np.asarray(v, float)
                                                for v in (r1, r2, theta1, theta2, phi)))
    P1, P2 = properties(r1), properties(r2)
    c1, c2, s1, s2, cp = np.cos(t1), np.cos(t2), np.sin(t1), np.sin(t2), np.cos(phi)
    return _cm(P1, P2, c1, c2, s1 * s2 * cp)


def cm_from_invariants(r1, r2, c1, c2, x):
    """Same as ``cm_coefficients`` with c_i = cos theta_i and x = s1 s2 cos phi."""
    return _cm(properties(r1), properties(r2), np.asarray(c1), np.asarray(c2), np.asarray(x))


def _cm(P1, P2, c1, c2, x):
    mu1, mu2 = P1["mu"], P2["mu"]
    T1, T2 = P1["Theta"], P2["Theta"]
    O1, O2 = P1["Omega"], P2["Omega"]
    A = 2 * c1 * c2 - x
    C3 = mu1 * mu2 * A
    C4 = 1.5 * (T1 * mu2 * (c2 * (3 * c1**2 - 1) - 2 * x * c1)
                - mu1 * T2 * (c1 * (3 * c2**2 - 1) - 2 * x * c2))
    C5 = (-0.75 * T1 * T2 * (1 - 5 * c1**2 - 5 * c2**2 - 15 * c1**2 * c2**2
                             + 2 * (4 * c1 * c2 - x) ** 2)
          + mu1 * O2 * (2 * c1 * (5 * c2**3 - 3 * c2) - 1.5 * x * (5 * c2**2 - 1))
          + O1 * mu2 * (2 * c2 * (5 * c1**3 - 3 * c1) - 1.5 * x * (5 * c1**2 - 1)))
    ind = 0.5 * (mu1**2 * (P2["alpha_perp"] * (3 * c1**2 + 1)
                           + (P2["alpha_par"] - P2["alpha_perp"]) * A**2)
                 + mu2**2 * (P1["alpha_perp"] * (3 * c2**2 + 1)
                             + (P1["alpha_par"] - P1["alpha_perp"]) * A**2))
    g1, g2 = P1["gamma"], P2["gamma"]
    c6el = C6_EL_REF * P1["alpha_bar"] * P2["alpha_bar"] / alpha_bar(R_REF) ** 2
    disp = (c6el / 6) * (6 * (1 - g1) * (1 - g2) + 3 * g2 * (1 - g1) * (3 * c2**2 + 1)
                         + 3 * g1 * (1 - g2) * (3 * c1**2 + 1) + 9 * g1 * g2 * A**2)
    return np.stack([C3, C4, C5, ind + disp], axis=-1)


def c6_electronic(r1, r2):
    return C6_EL_REF * alpha_bar(r1) * alpha_bar(r2) / alpha_bar(R_REF) ** 2


def u_lr(R, r1, r2, theta1, theta2, phi):
    """u_LR in cm^-1 (R, r in bohr, angles in radians)."""
    C = cm_coefficients(r1, r2, theta1, theta2, phi)
    R = np.asarray(R, float)
    return -HARTREE_TO_CM1 * sum(C[..., i] / R**m for i, m in enumerate(POWERS))


def u_from_cm(R, C, powers=POWERS):
    R = np.asarray(R, float)
    return -HARTREE_TO_CM1 * sum(C[..., i] / R**m for i, m in enumerate(powers))


def sample(n, seed=0, R_range=(16.0, 64.0), r_range=R_RANGE):
    """Random KRb+KRb geometries: R, r_i uniform; theta_i, phi uniform in [0, π] (degrees)."""
    rng = np.random.default_rng(seed)
    d = {
        "R": rng.uniform(*R_range, n),
        "r1": rng.uniform(*r_range, n),
        "r2": rng.uniform(*r_range, n),
        "theta1_deg": rng.uniform(0, 180, n),
        "theta2_deg": rng.uniform(0, 180, n),
        "phi_deg": rng.uniform(0, 180, n),
    }
    d["u_cm"] = u_lr(d["R"], d["r1"], d["r2"], *(np.deg2rad(d[k]) for k in
                                                  ("theta1_deg", "theta2_deg", "phi_deg")))
    return d


# --- general electrostatics, for checks -------------------------------------------------------

def axial_multipole_energy(Rvec, e1, e2, Q1, Q2, order=None, n_fft=32):
    """Electrostatic energy of two axial multipole series, term by term (au).

    Q_i = [Q_0, Q_1, ...] with Q_l = Σ q z^l along e_i (Q_1 = μ, Q_2 = Θ, Q_3 = Ω for
    axially symmetric, Buckingham-normalised moments).  With the Taylor expansion
        f(s, t) = 1/|R + t e2 - s e1| = Σ c_{l1 l2} s^l1 t^l2,
    the energy is E = Σ c_{l1 l2} Q1_l1 Q2_l2.  The coefficients c are computed to any
    order by a two-dimensional Cauchy integral (FFT on circles of radius |R|/4), which is
    exact up to rounding for these analytic functions.  Returns {n: E_n}, E_n ∝ R^-n
    collecting l1 + l2 = n - 1 (only n <= order if given).
    """
    Rvec, e1, e2 = (np.asarray(v, float) for v in (Rvec, e1, e2))
    rho = np.linalg.norm(Rvec) / 4
    ang = 2 * np.pi * np.arange(n_fft) / n_fft
    s = rho * np.exp(1j * ang)[:, None, None]
    t = rho * np.exp(1j * ang)[None, :, None]
    v = Rvec + t * e2 - s * e1
    f = 1.0 / np.sqrt(np.sum(v * v, axis=-1))
    c = np.fft.fft2(f) / n_fft**2
    out = {}
    for l1, q1 in enumerate(Q1):
        for l2, q2 in enumerate(Q2):
            n = l1 + l2 + 1
            if order is not None and n > order:
                continue
            coef = float(np.real(c[l1, l2])) / rho ** (l1 + l2)
            out[n] = out.get(n, 0.0) + q1 * q2 * coef
    return out


def point_charges_for_moments(moments, spacing=1.0):
    """Charges on the axis at z = spacing*(k - (n-1)/2) reproducing Q_0..Q_{n-1} exactly."""
    n = len(moments)
    z = spacing * (np.arange(n) - (n - 1) / 2)
    V = np.vander(z, n, increasing=True).T  # V[l, k] = z_k^l
    return np.linalg.solve(V, np.asarray(moments, float)), z


def point_charge_energy(Rvec, e1, e2, q1, z1, q2, z2):
    """Explicit Coulomb sum between two sets of on-axis point charges (au)."""
    p1 = np.outer(z1, e1)
    p2 = np.asarray(Rvec) + np.outer(z2, e2)
    d = np.linalg.norm(p1[:, None, :] - p2[None, :, :], axis=-1)
    return float(np.sum(np.outer(q1, q2) / d))


U_CM_FACTOR = HARTREE_TO_CM1
