"""The README results table is what experiments/update_readme.py makes of the result files."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "experiments" / "update_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_table_is_regenerated_from_the_result_files():
    mod = _module()
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- results:begin -->", 1)[1].split("<!-- results:end -->", 1)[0].strip()
    assert table == "\n".join(mod.rows()), "README table is stale: run python experiments/update_readme.py"


def test_every_ablation_dataset_has_a_row_without_best_of_selection():
    mod = _module()
    ab = mod.load("longrange/ablation/results.json")
    rows = mod.ablation_rows()
    assert len(rows) == len(ab)
    for dataset, row in zip(ab, rows):
        assert f"ablation, {dataset}: {mod.ABLATION_CHOICE} " in row


def test_every_lode_dimer_has_a_row_per_protocol():
    """Each protocol in lode/results.json: one row per dimer, local next to the column chosen
    on validation (no best-of selection by test error)."""
    mod = _module()
    res = mod.load("longrange/lode/results.json") or {}
    rows = mod.lode_rows()
    assert len(rows) == sum(len(p["dimers"]) for p in res.values())
    recipes = mod.load("longrange/lode/results_recipes.json") or {}
    for protocol, p in res.items():
        rec = recipes.get(protocol, {})
        decided = rec.get("ratio") is not None and bool(rec.get("dimers"))
        for d in p["dimers"]:
            mine = [r for r in rows if f"LODE {d}, {protocol} protocol: {p['chosen']} (chosen on validation) vs local, "
                    f"recipe {rec['recipe'] if decided else 'plain'}" in r]
            assert len(mine) == 1, (protocol, d)
            src = rec["dimers"][d] if decided else p["dimers"][d]  # the adopted recipe's numbers
            assert f"vs {src['local_meV'][0]:.3g} ± {src['local_meV'][1]:.2g} meV" in mine[0]


def test_every_4g_hdnnp_set_has_a_row_with_the_column_chosen_on_validation():
    mod = _module()
    res = mod.load("longrange/hdnnp4g/results.json") or {}
    rows = mod.hdnnp_rows()
    assert len(rows) == len(res.get("sets", {}))
    for s, row in zip(res.get("sets", {}), rows):
        loc = res["sets"][s]["local"]["energy_rmse_meV_atom"][0]
        assert f"4G-HDNNP {s} subset: {res['chosen']} (chosen on validation) vs local" in row
        assert f"vs {loc:.3g} ± " in row


def test_every_two_hour_mace_run_has_a_row_the_committed_one_first(tmp_path):
    """Issue 20's bar is judged on each 2-hour run shown, and only the committed model
    (chosen on validation) is shown without the mark of the others."""
    import json

    mod = _module()
    committed = mod.load("local_models/aspirin_equivariant/record.json")
    other = dict(committed, name="other_120min", config="experiments/local_models/aspirin_equivariant_stage2.yaml",
                 test={"energy_mae": 0.18, "force_mae": 0.49}, validation={"energy_mae": 0.2, "force_mae": 0.6})
    short = dict(other, name="short_10min", minutes=10)
    for r in (committed, other, short):
        (tmp_path / f"timed_{r['name']}.json").write_text(json.dumps(r))
    rows = mod.equivariant_rows(tmp_path)
    assert len(rows) == 2 and f"--name {committed['name']} " in rows[0] and "--name other_120min " in rows[1]
    assert "not the committed model" in rows[1] and "not the committed model" not in rows[0]
    assert "| 0.180 kcal/mol | 0.490 kcal/mol/Å |" in rows[1] and "E ≤ 0.19, F ≤ 0.50: met" in rows[1]
    assert "weight EMA 0.99; stage 2 over the last 20 % with p_e 1000, p_f 1" in rows[1]
    assert "validation E 0.200 / F 0.600" in rows[1]
