"""The trained C_m models committed under experiments/results/cm_expansion agree with the
data snapshots committed beside the generators and with the metrics recorded at training
time (a stale model or data file fails here)."""

import json
import os

import numpy as np
import pytest

from lrnn.cm import cli, model

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RES = os.path.join(ROOT, "experiments", "results", "cm_expansion")
DATA = os.path.join(ROOT, "experiments", "cm_expansion", "data")
CASES = [("krb2", "krb2.npz", None), ("h3", "h3_aTZ.npz", (9.6, 18.3)),
         ("li3", "li3_aDZ.npz", (20.0, 40.0))]


@pytest.mark.parametrize("name,data,R_range", CASES, ids=[c[0] for c in CASES])
def test_committed_model_matches_its_recorded_metrics(name, data, R_range, tmp_path, capsys):
    path = os.path.join(RES, name, "model")
    assert os.path.exists(os.path.join(path, "config.json")), f"the committed model is missing: {path}"
    recorded = json.load(open(os.path.join(path, "config.json")))["extra"]["test"]
    d = dict(np.load(os.path.join(DATA, data)))
    d.pop("kind", None)
    if R_range is not None:  # the fitted range (the snapshot also holds the beyond-range points)
        keep = (d["R"] >= R_range[0] - 1e-9) & (d["R"] <= R_range[1] + 1e-9)
        d = {k: v[keep] for k, v in d.items()}
    np.savez(tmp_path / "d.npz", **d)
    assert cli.main(["evaluate", path, str(tmp_path / "d.npz"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == d["R"].size
    # train + validation + test together: the same error scale as the recorded test split
    assert 0.3 * recorded["rmse_cm"] < res["rmse_cm"] < 3.0 * recorded["rmse_cm"]
    u = np.asarray(model.load_model(path)(d))
    assert np.sqrt(np.mean((u - d["u_cm"]) ** 2)) == pytest.approx(res["rmse_cm"])
