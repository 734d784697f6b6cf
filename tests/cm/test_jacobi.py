import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from lrnn.cm import jacobi, krb


def _rand_rot(seed):
    return Rotation.random(random_state=seed).as_matrix()


def test_atom_diatom_roundtrip_and_invariance():
    R, r, th = 11.3, 1.7, 0.9
    pos = jacobi.atom_diatom_positions(R, r, th, masses=(1.0, 2.0))
    got = jacobi.atom_diatom_jacobi(pos, masses=(1.0, 2.0))
    np.testing.assert_allclose(np.array(got), [R, r, th], rtol=1e-12)
    Q = _rand_rot(0)
    pos2 = pos @ Q.T + jnp.array([3.0, -2.0, 7.5])
    np.testing.assert_allclose(np.array(jacobi.atom_diatom_jacobi(pos2, masses=(1.0, 2.0))),
                               [R, r, th], rtol=1e-12)
    _, _, c = jacobi.atom_diatom_invariants(pos2, masses=(1.0, 2.0))
    np.testing.assert_allclose(float(c), np.cos(th), rtol=1e-12)


def test_diatom_diatom_roundtrip_and_invariance():
    q = (20.0, 7.1, 8.2, 0.4, 2.2, -1.3)
    masses = (39.0, 87.0)
    pos = jacobi.diatom_diatom_positions(*q, masses=masses)
    np.testing.assert_allclose(np.array(jacobi.diatom_diatom_jacobi(pos, masses)), q,
                               rtol=1e-12, atol=1e-12)
    for seed in range(3):
        pos2 = pos @ _rand_rot(seed).T + jnp.array([1.0, 2.0, -3.0]) * seed
        np.testing.assert_allclose(np.array(jacobi.diatom_diatom_jacobi(pos2, masses)), q,
                                   rtol=1e-11, atol=1e-11)
        R, r1, r2, c1, c2, x = jacobi.diatom_diatom_invariants(pos2, masses)
        np.testing.assert_allclose([float(c1), float(c2), float(x)],
                                   [np.cos(q[3]), np.cos(q[4]),
                                    np.sin(q[3]) * np.sin(q[4]) * np.cos(q[5])], atol=1e-12)


def _fd_check(f, pos, h=1e-5):
    g = np.asarray(jax.jit(jax.grad(f))(pos))
    f = jax.jit(f)
    fd = np.zeros_like(g)
    p = np.asarray(pos)
    for idx in np.ndindex(p.shape):
        dp = np.zeros_like(p)
        dp[idx] = h
        fd[idx] = (float(f(jnp.asarray(p + dp))) - float(f(jnp.asarray(p - dp)))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    # a translation-invariant energy has zero net force
    np.testing.assert_allclose(g.sum(0), 0.0, atol=1e-9)


def test_forces_by_grad_match_finite_differences_atom_diatom():
    pos = jacobi.atom_diatom_positions(10.0, 1.4, 0.7) + 0.05 * jnp.arange(9.0).reshape(3, 3)

    def e(p):  # a C6/C8 form in Jacobi coordinates, through the angle itself
        R, r, th = jacobi.atom_diatom_jacobi(p)
        return -(8.0 + r * jnp.cos(th) ** 2) / R**6 - 120.0 * jnp.sin(th) / R**8

    _fd_check(e, pos)


def test_forces_by_grad_match_finite_differences_diatom_diatom():
    pos = jacobi.diatom_diatom_positions(18.0, 7.0, 7.6, 0.5, 2.0, 0.8, masses=(39.0, 87.0))

    def e(p):
        R, r1, r2, t1, t2, phi = jacobi.diatom_diatom_jacobi(p, (39.0, 87.0))
        C = krb_like(r1, r2, jnp.cos(t1), jnp.cos(t2), jnp.sin(t1) * jnp.sin(t2) * jnp.cos(phi))
        return -C / R**3

    def krb_like(r1, r2, c1, c2, x):
        return 0.05 * (r1 / 7.0) * (r2 / 7.0) * (2 * c1 * c2 - x)

    _fd_check(e, pos)

    def e_inv(p):
        R, r1, r2, c1, c2, x = jacobi.diatom_diatom_invariants(p, (39.0, 87.0))
        return -krb_like(r1, r2, c1, c2, x) / R**3

    np.testing.assert_allclose(np.asarray(jax.grad(e)(pos)), np.asarray(jax.grad(e_inv)(pos)),
                               rtol=1e-9, atol=1e-14)


def test_invariant_form_equals_krb_reference():
    rng = np.random.default_rng(0)
    q = [rng.uniform(5.7, 8.8, 5), rng.uniform(5.7, 8.8, 5), rng.uniform(0, np.pi, 5),
         rng.uniform(0, np.pi, 5), rng.uniform(-np.pi, np.pi, 5)]
    a = krb.cm_coefficients(*q)
    b = krb.cm_from_invariants(q[0], q[1], np.cos(q[2]), np.cos(q[3]),
                               np.sin(q[2]) * np.sin(q[3]) * np.cos(q[4]))
    np.testing.assert_allclose(a, b, rtol=1e-12)
