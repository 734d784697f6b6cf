import json

import jax
import numpy as np
import pytest

from lrnn.cm import cli, krb, model
from lrnn.cm.data import DataError, validate


@pytest.fixture()
def krb_model(tmp_path):
    d = krb.sample(64, seed=0)
    cfg = model.make_config(model.DIATOM_DIATOM, d, hidden=[4])
    p = model.init_params(cfg, jax.random.PRNGKey(0))
    path = tmp_path / "model"
    model.save_model(path, cfg, p)
    return path, d


def test_evaluate_prints_metrics(krb_model, tmp_path, capsys):
    path, d = krb_model
    np.savez(tmp_path / "d.npz", **d)
    assert cli.main(["evaluate", str(path), str(tmp_path / "d.npz")]) == 0
    out = capsys.readouterr().out
    for word in ("RMSE", "MAE", "cm^-1", "< 1 %", "< 10 %", "count", "64"):
        assert word in out
    assert cli.main(["evaluate", str(path), str(tmp_path / "d.npz"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 64 and res["rmse_cm"] > 0
    assert set(res) >= {"rmse_cm", "mae_cm", "frac_rel_lt_1pct", "frac_rel_lt_10pct", "n"}
    u = np.asarray(model.load_model(path)(d))
    assert res["rmse_cm"] == pytest.approx(float(np.sqrt(np.mean((u - d["u_cm"]) ** 2))))


def _bad(tmp_path, capsys, path, **cols):
    np.savez(tmp_path / "bad.npz", **cols)
    rc = cli.main(["evaluate", str(path), str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert rc != 0
    return err


def test_bad_input_gives_clear_errors(krb_model, tmp_path, capsys):
    path, d = krb_model
    bad = dict(d)
    bad["R"] = d["R"].copy()
    bad["R"][3] = -1.0
    assert "'R' must be > 0" in _bad(tmp_path, capsys, path, **bad)
    bad = {k: v for k, v in d.items() if k != "phi_deg"}
    assert "missing column(s) ['phi_deg']" in _bad(tmp_path, capsys, path, **bad)
    bad = {k: v for k, v in d.items() if k != "u_cm"}
    assert "missing column(s) ['u_cm']" in _bad(tmp_path, capsys, path, **bad)
    bad = dict(d)
    bad["theta1_deg"] = d["theta1_deg"].copy()
    bad["theta1_deg"][5] = np.nan
    assert "NaN" in _bad(tmp_path, capsys, path, **bad)
    # an atom–diatom data set given to a diatom–diatom model
    ad = dict(R=np.array([10.0, 11.0]), r=np.array([1.4, 1.4]), theta_deg=np.array([0, 90.0]),
              u_cm=np.array([-1.0, -0.5]))
    err = _bad(tmp_path, capsys, path, **ad)
    assert "atom_diatom data set" in err and "model" in err and "diatom_diatom" in err
    assert "no such file" in _bad_missing(path, tmp_path, capsys)


def _bad_missing(path, tmp_path, capsys):
    rc = cli.main(["evaluate", str(path), str(tmp_path / "nope.npz")])
    assert rc != 0
    return capsys.readouterr().err


def test_validate_errors():
    with pytest.raises(DataError, match="r1"):
        validate(dict(R=[1.0], r2=[1.0], theta1_deg=[0.0], theta2_deg=[0.0], phi_deg=[0.0],
                      u_cm=[1.0]))
    with pytest.raises(DataError, match="'r' must be > 0"):
        validate(dict(R=[1.0], r=[0.0], theta_deg=[0.0], u_cm=[1.0]))
    with pytest.raises(DataError, match="has 1 values, expected 2"):
        validate(dict(R=[1.0, 2.0], r=[1.0], theta_deg=[0.0, 1.0], u_cm=[1.0, 2.0]))
