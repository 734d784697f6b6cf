import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrnn.cm import data as D
from lrnn.cm import fit, krb, model


def _h3_like(n, seed=0):
    """Synthetic atom–diatom data with the C6/C8/C10 form and a homonuclear symmetry."""
    rng = np.random.default_rng(seed)
    R = rng.uniform(9.6, 18.3, n)
    r = rng.uniform(1.0, 4.0, n)
    th = rng.uniform(0, 180, n)
    c2 = np.cos(np.deg2rad(th)) ** 2
    C6 = 8.0 * (r / 1.4) ** 2 * (1 + 0.15 * (3 * c2 - 1) / 2)
    C8 = 130.0 * (r / 1.4) ** 2 * (1 + 0.3 * c2)
    C10 = 3000.0 * (r / 1.4)
    u = -219474.6313705 * (C6 / R**6 + C8 / R**8 + C10 / R**10)
    return dict(R=R, r=r, theta_deg=th, u_cm=u)


def test_homonuclear_symmetry_option():
    d = _h3_like(50)
    cfg = model.make_config(model.ATOM_DIATOM, d, hidden=[8], symmetrize="homonuclear")
    p = model.init_params(cfg, jax.random.PRNGKey(3))
    mirrored = dict(d, theta_deg=180.0 - d["theta_deg"])
    np.testing.assert_allclose(model.cm_values(p, cfg, d), model.cm_values(p, cfg, mirrored),
                               rtol=1e-12)
    # without the option the network is not symmetric
    cfg0 = model.make_config(model.ATOM_DIATOM, d, hidden=[8])
    p0 = model.init_params(cfg0, jax.random.PRNGKey(3))
    assert not np.allclose(model.cm_values(p0, cfg0, d), model.cm_values(p0, cfg0, mirrored))


def test_swap_symmetry_option_and_angular_basis():
    d = krb.sample(40, seed=2)
    for feats in ("raw", "invariant"):
        cfg = model.make_config(model.DIATOM_DIATOM, d, hidden=[6], features=feats,
                                symmetrize="swap")
        p = model.init_params(cfg, jax.random.PRNGKey(0))
        sw = dict(d, r1=d["r2"], r2=d["r1"], theta1_deg=180 - d["theta2_deg"],
                  theta2_deg=180 - d["theta1_deg"])
        np.testing.assert_allclose(model.cm_values(p, cfg, d), model.cm_values(p, cfg, sw),
                                   rtol=1e-10)
    # the angular basis contains the exact reference: the C_m of KRb are reproduced by a
    # least-squares fit of radial coefficients at fixed r1, r2
    cfg = model.make_config(model.DIATOM_DIATOM, d, hidden=[4], features="angular")
    B, which = model._angular_values(cfg, d)
    B, which = np.asarray(B), np.asarray(which)
    fixed = dict(d, r1=np.full(40, 7.0), r2=np.full(40, 8.0))
    C = krb.cm_coefficients(7.0, 8.0, *np.deg2rad([d["theta1_deg"], d["theta2_deg"],
                                                   d["phi_deg"]]))
    for i in range(4):
        coef = np.linalg.lstsq(B[:, which == i], C[:, i], rcond=None)[0]
        np.testing.assert_allclose(B[:, which == i] @ coef, C[:, i], rtol=1e-9,
                                   atol=1e-9 * np.abs(C[:, i]).max())
    del fixed


@pytest.mark.parametrize("kw", [dict(features="invariant"),
                                dict(features="angular", symmetrize="homonuclear",
                                     exchange=dict(beta=2.0, powers=[0, 1], scale_cm=1e3))])
def test_jax_grad_through_model_gives_forces(kw):
    from lrnn.cm import jacobi

    d = _h3_like(30)
    cfg = model.make_config(model.ATOM_DIATOM, d, hidden=[5], **kw)
    p = model.init_params(cfg, jax.random.PRNGKey(1))

    def e(pos):
        R, r, th = jacobi.atom_diatom_jacobi(pos)
        dd = dict(R=R[None], r=r[None], theta_deg=jnp.rad2deg(th)[None])
        return model.energy(p, cfg, dd)[0]

    pos = jacobi.atom_diatom_positions(11.0, 1.5, 1.0)
    g = np.asarray(jax.jit(jax.grad(e))(pos))
    e = jax.jit(e)
    h = 1e-5
    fd = np.zeros_like(g)
    for idx in np.ndindex(g.shape):
        dp = np.zeros(g.shape)
        dp[idx] = h
        fd[idx] = (float(e(pos + dp)) - float(e(pos - dp))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-10)


def test_lm_converges_on_a_tiny_problem():
    tr, va, cfg = _tiny_lm_problem()
    p0 = model.init_params(cfg, jax.random.PRNGKey(0))
    loss0 = float(np.mean((np.asarray(model.energy(p0, cfg, va)) - va["u_cm"]) ** 2))
    p, hist = fit.levenberg_marquardt(p0, cfg, tr, va, max_iter=150, verbose=False)
    m = D.metrics(va["u_cm"], model.energy(p, cfg, va))
    assert min(hist["val"]) < 1e-4 * loss0
    assert m["frac_rel_lt_1pct"] > 0.6
    # relative weighting and the exact output-layer refit also work
    p2, _ = fit.levenberg_marquardt(p0, cfg, tr, va, max_iter=60, relative=True,
                                    refit_every=1, verbose=False)
    assert D.metrics(va["u_cm"], model.energy(p2, cfg, va))["frac_rel_lt_1pct"] > 0.5


def _tiny_lm_problem():
    d = _h3_like(300, seed=1)
    tr, va = D.subset(d, np.arange(250)), D.subset(d, np.arange(250, 300))
    cfg = model.make_config(model.ATOM_DIATOM, tr, hidden=[6], features="invariant",
                            symmetrize="homonuclear", cm_scale=[8.0, 130.0, 3000.0])
    return tr, va, cfg


@pytest.mark.parametrize("seed", [0, 5, 7])
def test_lm_converges_from_three_initialisations(seed):
    # plain LM (projection=False) stalls in a local minimum from each of these three
    # initialisations (validation loss 3.8e-2, 5.1e-3, 9.4e-3 of the initial one);
    # variable projection must converge from all of them
    tr, va, cfg = _tiny_lm_problem()
    p0 = model.init_params(cfg, jax.random.PRNGKey(seed))
    loss0 = float(np.mean((np.asarray(model.energy(p0, cfg, va)) - va["u_cm"]) ** 2))
    p, hist = fit.levenberg_marquardt(p0, cfg, tr, va, max_iter=150, verbose=False)
    assert min(hist["val"]) < 1e-4 * loss0
    assert D.metrics(va["u_cm"], model.energy(p, cfg, va))["frac_rel_lt_1pct"] > 0.9
    assert all(np.isfinite(hist["cond"])) and min(hist["cond"]) >= 1.0


def test_damped_step_fails_on_an_indefinite_matrix_and_damping_cures_it():
    A = jnp.array([[2.0, 1.9], [1.9, 1.0]])  # eigenvalues 3.44 and -0.44
    g = jnp.array([1.0, -1.0])
    d, _ = fit.damped_step(A, g, 1e-3)
    assert not np.all(np.isfinite(np.asarray(d)))
    d, cond = fit.damped_step(A, g, 10.0)
    M = A + 10.0 * jnp.diag(jnp.diag(A)) + 10.0 * 1e-12 * 2.0 * jnp.eye(2)
    np.testing.assert_allclose(np.asarray(d), -np.linalg.solve(np.asarray(M), np.asarray(g)),
                               rtol=1e-10)
    assert 1.0 <= float(cond)


def test_a_failed_cholesky_raises_lambda_and_is_not_a_step(monkeypatch):
    tr, va, cfg = _tiny_lm_problem()
    p0 = model.init_params(cfg, jax.random.PRNGKey(1))
    real, calls = fit.damped_step, []

    def flaky(A, g, lam):  # the first three factorisations fail
        calls.append(1)
        d, c = real(A, g, lam)
        return (d * jnp.nan, c) if len(calls) <= 3 else (d, c)

    monkeypatch.setattr(fit, "damped_step", flaky)
    _, hist = fit.levenberg_marquardt(p0, cfg, tr, va, max_iter=3, lam0=1e-3, lam_up=4.0,
                                      lam_down=3.0, verbose=False)
    assert [h[1] for h in hist["nonfinite"]] == pytest.approx([1e-3, 4e-3, 1.6e-2])
    assert hist["it"] == [0, 1, 2]  # the failures were retried, not counted as iterations
    assert hist["lam"][0] == pytest.approx(6.4e-2 / 3.0)


def test_adam_decreases_loss():
    d = _h3_like(200, seed=4)
    cfg = model.make_config(model.ATOM_DIATOM, d, form="pure", hidden=[8])
    p0 = model.init_params(cfg, jax.random.PRNGKey(0))
    l0 = float(np.mean((np.asarray(model.energy(p0, cfg, d)) - d["u_cm"]) ** 2))
    p, _ = fit.adam(p0, cfg, d, steps=300, batch=64, lr=1e-2, verbose=False)
    assert float(np.mean((np.asarray(model.energy(p, cfg, d)) - d["u_cm"]) ** 2)) < 0.2 * l0


def test_save_load_roundtrip(tmp_path):
    d = krb.sample(30, seed=0)
    cfg = model.make_config(model.DIATOM_DIATOM, d, hidden=[4, 3], activation="tanh")
    p = model.init_params(cfg, jax.random.PRNGKey(0))
    path = tmp_path / "m"
    model.save_model(path, cfg, p)
    model.save_model(path, cfg, p)  # overwriting is atomic too
    m = model.load_model(path)
    np.testing.assert_allclose(np.asarray(m(d)), np.asarray(model.energy(p, cfg, d)), rtol=1e-14)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m"]
    with pytest.raises(FileNotFoundError):
        model.load_model(tmp_path / "nothing")


def test_product_angular_model_fits_krb_and_roundtrips(tmp_path):
    d = krb.sample(600, seed=3)
    tr, va = D.subset(d, np.arange(500)), D.subset(d, np.arange(500, 600))
    cfg = model.make_config(model.DIATOM_DIATOM, tr, hidden=[4, 3], features="angular",
                            product=True, cm_scale=[0.05, 5.0, 300.0, 1.3e4])
    p = model.init_params(cfg, jax.random.PRNGKey(0))
    p = fit.refit_output_layer(p, cfg, tr)
    m = D.metrics(va["u_cm"], model.energy(p, cfg, va))
    # the exact angular structure makes even random radial features + least squares good
    assert m["frac_rel_lt_10pct"] > 0.9
    model.save_model(tmp_path / "m", cfg, p)
    np.testing.assert_allclose(np.asarray(model.load_model(tmp_path / "m")(va)),
                               np.asarray(model.energy(p, cfg, va)), rtol=1e-13)
    C = np.asarray(model.cm_values(p, cfg, va))
    u = -219474.6313705 * sum(C[:, i] / va["R"] ** m for i, m in enumerate((3, 4, 5, 6)))
    np.testing.assert_allclose(u, np.asarray(model.energy(p, cfg, va)), rtol=1e-10)


def test_lm_angular_atom_diatom():
    d = _h3_like(200, seed=5)
    tr, va = D.subset(d, np.arange(160)), D.subset(d, np.arange(160, 200))
    cfg = model.make_config(model.ATOM_DIATOM, tr, hidden=[6], features="angular",
                            symmetrize="homonuclear", cm_scale=[8.0, 130.0, 3000.0])
    assert cfg["angular_basis"] == {"6": [[0], [2]], "8": [[0], [2], [4]],
                                    "10": [[0], [2], [4], [6]]}
    p = model.init_params(cfg, jax.random.PRNGKey(0))
    p, _ = fit.levenberg_marquardt(p, cfg, tr, va, max_iter=40, refit_every=1, verbose=False)
    assert D.metrics(va["u_cm"], model.energy(p, cfg, va))["frac_rel_lt_10pct"] > 0.9
    mirrored = dict(va, theta_deg=180.0 - va["theta_deg"])
    np.testing.assert_allclose(model.cm_values(p, cfg, va), model.cm_values(p, cfg, mirrored),
                               rtol=1e-12)


def _exchange_like(d, amp_cm, beta=2.0, rpow=2):
    """An exponential atom–atom term like the H + H2 exchange (cm^-1)."""
    c = np.cos(np.deg2rad(d["theta_deg"]))
    return amp_cm * (d["r"] / 2.0) ** rpow * sum(
        np.exp(-beta * (np.sqrt(d["R"] ** 2 + d["r"] ** 2 / 4 + s * d["R"] * d["r"] * c) - 8.0))
        for s in (1, -1))


def test_exchange_term_symmetric_decays_and_splits_the_energy():
    d = _h3_like(200)
    cfg = model.make_config(model.ATOM_DIATOM, d, hidden=[5], features="angular",
                            symmetrize="homonuclear", cm_scale=[8.0, 130.0, 3000.0],
                            exchange=dict(beta=2.0, powers=[0, 1]))
    assert cfg["exchange"]["d0"] == pytest.approx(
        np.min(np.sqrt(d["R"] ** 2 + d["r"] ** 2 / 4
                       - d["R"] * d["r"] * np.abs(np.cos(np.deg2rad(d["theta_deg"]))))))
    p = model.init_params(cfg, jax.random.PRNGKey(2))
    p = {"W": p["W"][:-1] + [p["W"][-1] * 30], "b": p["b"]}  # a visible exchange part
    u = np.asarray(model.energy(p, cfg, d))
    ux = np.asarray(model.exchange_energy(p, cfg, d))
    C = np.asarray(model.cm_values(p, cfg, d))
    series = -219474.6313705 * sum(C[:, i] / d["R"] ** m for i, m in enumerate((6, 8, 10)))
    np.testing.assert_allclose(u, series + ux, rtol=1e-12)
    assert np.all(np.abs(ux) > 0)
    mirrored = dict(d, theta_deg=180.0 - d["theta_deg"])
    np.testing.assert_allclose(np.asarray(model.energy(p, cfg, mirrored)), u, rtol=1e-12)
    # far away the exchange part is gone and u R^6 -> -C6 (the asymptote is the series')
    far = dict(d, R=np.full_like(d["R"], 200.0))
    ux_far = np.asarray(model.exchange_energy(p, cfg, far))
    u_far = np.asarray(model.energy(p, cfg, far))
    assert np.all(np.abs(ux_far) < 1e-100 * np.abs(u_far))
    # the least-squares output layer sees the exchange columns too
    d_exact = dict(d, u_cm=u)
    p2 = fit.refit_output_layer(p, cfg, d_exact)
    err = np.abs(np.asarray(model.energy(p2, cfg, d)) - u)
    assert err.max() < 1e-4 * np.abs(ux).max()


def test_exchange_term_recovers_c6_where_the_series_alone_cannot():
    """Data = an r-independent C6/C8/C10 series + an exponential exchange-like term: the
    least-squares output layer with the exchange columns returns the true C6; the series
    alone absorbs the exponential into its coefficients and misses C6 by percents."""
    rng = np.random.default_rng(7)
    n = 300
    d = dict(R=rng.uniform(9.6, 18.3, n), r=rng.uniform(1.0, 4.0, n),
             theta_deg=np.rad2deg(np.arccos(rng.uniform(-1, 1, n))))
    p2 = (3 * np.cos(np.deg2rad(d["theta_deg"])) ** 2 - 1) / 2
    c6 = 8.0 * (1 + 0.1 * p2)
    d["u_cm"] = -219474.6313705 * (c6 / d["R"] ** 6 + 130.0 / d["R"] ** 8
                                   + 3000.0 / d["R"] ** 10) + _exchange_like(d, 0.5, rpow=0)
    probe = dict(R=np.full(2, 1e4), r=np.full(2, 1.4), theta_deg=np.array([0.0, 90.0]))
    c6_true = 8.0 * (1 + 0.1 * np.array([1.0, -0.5]))
    errs = {}
    for name, ex in (("series", None), ("exchange", dict(beta=2.0, powers=[0]))):
        cfg = model.make_config(model.ATOM_DIATOM, d, hidden=[8], features="angular",
                                symmetrize="homonuclear", cm_scale=[8.0, 130.0, 3000.0],
                                exchange=ex)
        p = fit.refit_output_layer(model.init_params(cfg, jax.random.PRNGKey(0)), cfg, d,
                                   weights=1 / np.abs(d["u_cm"]))
        errs[name] = np.max(np.abs(np.asarray(model.cm_values(p, cfg, probe))[:, 0] / c6_true
                                   - 1))
    assert errs["exchange"] < 1e-3
    assert errs["series"] > 0.01


def test_exchange_config_errors():
    d = _h3_like(10)
    with pytest.raises(ValueError, match="homonuclear"):
        model.make_config(model.ATOM_DIATOM, d, exchange=dict(beta=2.0, powers=[0]))
    with pytest.raises(ValueError, match="beta > 0"):
        model.make_config(model.ATOM_DIATOM, d, symmetrize="homonuclear",
                          exchange=dict(beta=0.0, powers=[0]))
    cfg = model.make_config(model.ATOM_DIATOM, d, symmetrize="homonuclear")
    with pytest.raises(ValueError, match="no exchange term"):
        model.exchange_energy(model.init_params(cfg, jax.random.PRNGKey(0)), cfg, d)
