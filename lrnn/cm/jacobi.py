"""Jacobi coordinates from Cartesian positions (bohr), differentiable in JAX.

Atom–diatom ``pos`` has shape (..., 3, 3): diatom atoms a, b then the atom c.
``R`` is the vector from the diatom's centre of mass to c, ``r`` the a→b bond length and
``theta`` the angle between a→b and R.

Diatom–diatom ``pos`` has shape (..., 4, 3): molecule 1 (a1, b1), molecule 2 (a2, b2).
``e_i`` is the unit a_i→b_i axis (for KRb, K→Rb: the dipole direction), R points from the
centre of mass of molecule 1 to that of molecule 2, ``theta_i`` is the angle between e_i
and R, and ``phi`` the dihedral angle between the (e1, R) and (e2, R) planes, so that
``e1·e2 = c1 c2 + s1 s2 cos(phi)``.

Every function is built from jnp operations only: ``jax.grad`` of an energy written in
these coordinates gives Cartesian forces.  The *invariant* variants (cosines and
``x = s1 s2 cos(phi) = e1·e2 - c1 c2``) are polynomial in the unit vectors and therefore
smooth even at linear geometries, where the angles themselves are not differentiable.
"""

from __future__ import annotations

import jax.numpy as jnp


def _com(p, q, m_p, m_q):
    return (m_p * p + m_q * q) / (m_p + m_q)


def _norm(v):
    return jnp.sqrt(jnp.sum(v * v, axis=-1))


def _angle(u, v):
    """Angle between vectors via atan2(|u×v|, u·v) (accurate near 0 and π)."""
    return jnp.arctan2(_norm(jnp.cross(u, v)), jnp.sum(u * v, axis=-1))


def atom_diatom_vectors(pos, masses=(1.0, 1.0)):
    pos = jnp.asarray(pos)
    a, b, c = pos[..., 0, :], pos[..., 1, :], pos[..., 2, :]
    rvec = b - a
    Rvec = c - _com(a, b, masses[0], masses[1])
    return Rvec, rvec


def atom_diatom_jacobi(pos, masses=(1.0, 1.0)):
    """(R, r, theta[rad]) for positions (..., 3, 3); ``masses`` of the diatom atoms a, b."""
    Rvec, rvec = atom_diatom_vectors(pos, masses)
    return _norm(Rvec), _norm(rvec), _angle(rvec, Rvec)


def atom_diatom_invariants(pos, masses=(1.0, 1.0)):
    """(R, r, cos theta): smooth everywhere except at R = 0 or r = 0."""
    Rvec, rvec = atom_diatom_vectors(pos, masses)
    R, r = _norm(Rvec), _norm(rvec)
    return R, r, jnp.sum(Rvec * rvec, axis=-1) / (R * r)


def diatom_diatom_vectors(pos, masses=(1.0, 1.0)):
    pos = jnp.asarray(pos)
    a1, b1, a2, b2 = (pos[..., i, :] for i in range(4))
    r1v, r2v = b1 - a1, b2 - a2
    Rvec = _com(a2, b2, masses[0], masses[1]) - _com(a1, b1, masses[0], masses[1])
    return Rvec, r1v, r2v


def diatom_diatom_jacobi(pos, masses=(1.0, 1.0)):
    """(R, r1, r2, theta1, theta2, phi) [rad] for positions (..., 4, 3).

    ``masses`` are those of atoms a and b of each (identical) molecule, e.g. (K, Rb).
    phi is in (-π, π]; the C_m depend on cos(phi) only.
    """
    Rvec, r1v, r2v = diatom_diatom_vectors(pos, masses)
    R = _norm(Rvec)
    Rh = Rvec / R[..., None]
    e1 = r1v / _norm(r1v)[..., None]
    e2 = r2v / _norm(r2v)[..., None]
    c1 = jnp.sum(e1 * Rh, -1)
    c2 = jnp.sum(e2 * Rh, -1)
    p1 = e1 - c1[..., None] * Rh
    p2 = e2 - c2[..., None] * Rh
    x = jnp.sum(p1 * p2, -1)
    y = jnp.sum(Rh * jnp.cross(p1, p2), -1)
    return (R, _norm(r1v), _norm(r2v), _angle(r1v, Rvec), _angle(r2v, Rvec),
            jnp.arctan2(y, x))


def diatom_diatom_invariants(pos, masses=(1.0, 1.0)):
    """(R, r1, r2, c1, c2, x) with c_i = cos theta_i and x = s1 s2 cos phi = e1·e2 - c1 c2."""
    Rvec, r1v, r2v = diatom_diatom_vectors(pos, masses)
    R, r1, r2 = _norm(Rvec), _norm(r1v), _norm(r2v)
    c1 = jnp.sum(r1v * Rvec, -1) / (r1 * R)
    c2 = jnp.sum(r2v * Rvec, -1) / (r2 * R)
    e12 = jnp.sum(r1v * r2v, -1) / (r1 * r2)
    return R, r1, r2, c1, c2, e12 - c1 * c2


def atom_diatom_positions(R, r, theta, masses=(1.0, 1.0)):
    """Cartesian positions (3, 3) for given Jacobi coordinates (theta in rad), diatom on z."""
    R, r, theta = (jnp.asarray(v) for v in (R, r, theta))
    fa = masses[1] / (masses[0] + masses[1])
    z = jnp.zeros_like(R)
    a = jnp.stack([z, z, -fa * r], -1)
    b = jnp.stack([z, z, (1 - fa) * r], -1)
    c = jnp.stack([R * jnp.sin(theta), z, R * jnp.cos(theta)], -1)
    return jnp.stack([a, b, c], -2)


def diatom_diatom_positions(R, r1, r2, theta1, theta2, phi, masses=(1.0, 1.0)):
    """Cartesian positions (4, 3): R along z, molecule 1 in the xz plane (angles in rad)."""
    R, r1, r2, t1, t2, phi = (jnp.asarray(v) for v in (R, r1, r2, theta1, theta2, phi))
    fa = masses[1] / (masses[0] + masses[1])
    z = jnp.zeros_like(R)
    e1 = jnp.stack([jnp.sin(t1), z, jnp.cos(t1)], -1)
    e2 = jnp.stack([jnp.sin(t2) * jnp.cos(phi), jnp.sin(t2) * jnp.sin(phi), jnp.cos(t2)], -1)
    c2 = jnp.stack([z, z, R], -1)
    a1, b1 = -fa * r1[..., None] * e1, (1 - fa) * r1[..., None] * e1
    a2, b2 = c2 - fa * r2[..., None] * e2, c2 + (1 - fa) * r2[..., None] * e2
    return jnp.stack([a1, b1, a2, b2], -2)
