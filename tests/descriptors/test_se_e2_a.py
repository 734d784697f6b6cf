"""The se_e2_a switch is C² at r_cs and r_c; the environment matrix is zero on padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn.descriptors.se_e2_a import env_matrix, smooth_switch

RCS, RC = 0.5, 6.0


@pytest.mark.parametrize("r0", [RCS, RC])
def test_switch_is_c2(r0):
    sw = lambda r: smooth_switch(r, RCS, RC)  # noqa: E731
    d1, d2 = jax.grad(sw), jax.grad(jax.grad(sw))
    h = 1e-9
    for f in (sw, d1, d2):
        assert abs(float(f(r0 - h)) - float(f(r0 + h))) < 1e-6
    assert float(sw(RCS - 0.1)) == 1.0 and float(sw(RC + 0.1)) == 0.0
    # the third derivative does jump: the switch is exactly C2, as designed
    mid = jnp.linspace(RCS + 1e-3, RC - 1e-3, 50)
    assert np.all(np.diff(np.asarray(jax.vmap(sw)(mid))) <= 0)


def test_env_matrix_rows_and_padding():
    d = jnp.array([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    mask = jnp.array([True, False, True])
    env = np.asarray(env_matrix(d, mask, RCS, RC))
    s = float(smooth_switch(3.0, RCS, RC)) / 3.0
    np.testing.assert_allclose(env[0], [s, s / 3, 2 * s / 3, 2 * s / 3], rtol=1e-12)
    np.testing.assert_array_equal(env[1], 0.0)  # padding
    np.testing.assert_array_equal(env[2], 0.0)  # beyond r_c
    g = jax.grad(lambda x: env_matrix(x, mask, RCS, RC).sum())(d)
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g)[1] == 0)
