"""experiments/longrange/lode_dimers.py without training: the two protocols' splits, the choice of
the long-range column from validation errors only, and issue 18's bars (values worked by hand)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lode_dimers", ROOT / "experiments/longrange/lode_dimers.py")
ld = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ld)


@pytest.mark.parametrize("protocol", ld.PROTOCOLS)
def test_splits_partition_the_13_separations(protocol):
    for d in ld.DIMERS:
        fit, val, test = ld.split(d, protocol)
        assert sorted(np.concatenate([fit, val, test]).tolist()) == list(range(13))
        if protocol == "sognet":  # SOG-Net's held-out separation; 10 + 2 of its 12 training ones
            assert test.tolist() == [11] and len(fit) == 10 and len(val) == 2
        else:  # in order of distance: fit the 7 closest, validate on the next 2, test on the 4 farthest
            assert fit.tolist() == list(range(7)) and val.tolist() == [7, 8] and test.tolist() == [9, 10, 11, 12]
    with pytest.raises(ValueError, match="protocol"):
        ld.split("0_CC", "random")


def records(val, test):
    """Records with the same validation (test) MAE, in eV, for all 5 members and every dimer."""
    return {("extrapolation", d, c): {"val_energy_mae_eV": [val[c]] * 5, "test_energy_mae_eV": [test[c]] * 5}
            for d in ld.DIMERS for c in val}


def test_choice_reads_validation_only():
    # sog: ratios 0.5 on every dimer -> geometric mean 0.5; latent_coulomb 0.25 -> chosen,
    # although its test errors are the worst
    recs = records(val={"local": 0.4, "sog": 0.2, "latent_coulomb": 0.1},
                   test={"local": 0.4, "sog": 0.01, "latent_coulomb": 0.9})
    chosen, scores = ld.choose(recs, "extrapolation")
    assert chosen == "latent_coulomb"
    assert scores == pytest.approx({"sog": 0.5, "latent_coulomb": 0.25})
    # no choice until local has run on every dimer; a column missing a dimer is not a candidate
    del recs[("extrapolation", "6_AA", "local")]
    assert ld.choose(recs, "extrapolation") == (None, {})
    recs = records(val={"local": 0.4, "sog": 0.2, "latent_coulomb": 0.1}, test={"local": 0, "sog": 0, "latent_coulomb": 0})
    del recs[("extrapolation", "6_AA", "latent_coulomb")]
    assert ld.choose(recs, "extrapolation")[0] == "sog"


def test_bars():
    recs = records(val={"local": 1, "sog": 1}, test={"local": 0.5, "sog": 0.1})
    # 0_CC: local 600 meV; members 0.09, 0.11, 0.1, 0.1, 0.1 eV: mean 100 meV (6x), sample std 7.07 meV < 100/3
    recs[("extrapolation", "0_CC", "local")]["test_energy_mae_eV"] = [0.6] * 5
    recs[("extrapolation", "0_CC", "sog")]["test_energy_mae_eV"] = [0.09, 0.11, 0.1, 0.1, 0.1]
    # 9_CP: 5x, with a sample std of 0.05 eV, more than a third of its 0.1 eV mean
    recs[("extrapolation", "9_CP", "sog")]["test_energy_mae_eV"] = [0.05, 0.15, 0.05, 0.15, 0.1]
    # 3_PA: local 500 ± 14.1 meV; sog 510 is within one std of local, 2_CA's 520 is not
    recs[("extrapolation", "3_PA", "local")]["test_energy_mae_eV"] = [0.48, 0.52, 0.5, 0.5, 0.5]
    recs[("extrapolation", "3_PA", "sog")]["test_energy_mae_eV"] = [0.51] * 5
    recs[("extrapolation", "2_CA", "sog")]["test_energy_mae_eV"] = [0.52] * 5
    b = ld.bars(recs, "extrapolation", "sog")
    assert b["0_CC"][1] and "6.0x" in b["0_CC"][0]
    assert not b["9_CP"][1] and "std/mean 0.50" in b["9_CP"][0]
    # only sog has run beside local: no column worse, but the bar is not judged yet
    assert all(b[d][1] is None and "of the columns run: sog" in b[d][0] for d in ("3_PA", "29_PP", "6_AA"))
    assert b["2_CA"][1] is False and "sog worse" in b["2_CA"][0]
    for d in ld.DIMERS:  # every column run, each as good as local: judged, and met where none is worse
        for c in ld.COLUMNS:
            recs.setdefault(("extrapolation", d, c), dict(recs[("extrapolation", d, "local")]))
    b = ld.bars(recs, "extrapolation", "sog")
    assert b["3_PA"][1] is True and b["29_PP"][1] is True and b["6_AA"][1] is True
    assert b["2_CA"][1] is False and "sog worse" in b["2_CA"][0] and "columns run" not in b["2_CA"][0]


def test_recipe_rule_reads_validation_only():
    """The long-range column comes from the plain grid; the other recipe is adopted when the
    geometric mean of its validation ratio to plain is below 1 (worked by hand), whatever the
    test errors, and not before every dimer has run."""
    plain = records(val={"local": 0.4, "sog": 0.2}, test={"local": 0.4, "sog": 0.01})
    other = records(val={"local": 0.4, "sog": 0.2}, test={"local": 0.4, "sog": 0.9})
    # ratios 0.5 on 0_CC and 9_CP, 1.5 on the other four: exp((2 ln 0.5 + 4 ln 1.5) / 6) = 1.040
    for d in ld.DIMERS:
        other[("extrapolation", d, "sog")]["val_energy_mae_eV"] = [0.1 if d in ("0_CC", "9_CP") else 0.3] * 5
    column, val, ratio, adopt = ld.choose_recipe(plain, other, "extrapolation")
    assert column == "sog" and val["0_CC"] == pytest.approx((200.0, 100.0))
    assert ratio == pytest.approx(np.exp((2 * np.log(0.5) + 4 * np.log(1.5)) / 6)) and not adopt
    other[("extrapolation", "3_PA", "sog")]["val_energy_mae_eV"] = [0.02] * 5  # ratio 0.1: mean 0.72
    assert ld.choose_recipe(plain, other, "extrapolation")[3]
    del other[("extrapolation", "6_AA", "sog")]
    assert ld.choose_recipe(plain, other, "extrapolation")[2:] == (None, False)


def test_recipes_keep_a_committed_choice_when_the_plain_grid_is_gone(tmp_path, monkeypatch):
    """Without the plain records, ``recipes`` keeps the choice written in results_recipes.json
    (it cannot be remade) and judges the adopted recipe's test errors; without that file it
    makes no choice."""
    monkeypatch.setattr(ld, "RESULTS", tmp_path)
    monkeypatch.setattr(ld, "runs_dir", lambda recipe: tmp_path / recipe)
    (tmp_path / "plain").mkdir()
    (tmp_path / "restarts3").mkdir()
    for (p, d, c), r in records(val={"local": 0.4, "sog": 0.2}, test={"local": 0.5, "sog": 0.1}).items():
        r = dict(r, protocol=p, dimer=d, column=c, test_force_mae_eV_A=[0.01] * 5)
        (tmp_path / "restarts3" / f"{p}__{d}__{c}.json").write_text(ld.json.dumps(r))
    ld.cmd_recipes(None)
    summary = ld.json.loads((tmp_path / "results_recipes.json").read_text())
    assert summary == {}  # no plain grid, nothing committed: no choice
    kept = {"chosen": "sog", "validation_meV": {d: [250.0, 200.0] for d in ld.DIMERS}, "ratio": 0.8,
            "adopt": True, "recipe": "restarts3"}
    (tmp_path / "results_recipes.json").write_text(ld.json.dumps({"extrapolation": kept}))
    ld.cmd_recipes(None)
    summary = ld.json.loads((tmp_path / "results_recipes.json").read_text())
    assert set(summary) == {"extrapolation"} and summary["extrapolation"]["carried"]
    assert summary["extrapolation"]["dimers"]["0_CC"]["chosen_meV"] == pytest.approx([100.0, 0.0])
    assert summary["extrapolation"]["dimers"]["0_CC"]["met"] is True  # 5x, std 0
    md = (tmp_path / "results_recipes.md").read_text()
    assert "250 (carried)" in md and "lost" in md
