"""experiments/thesis_table/supersede.py: records made on an earlier version of a generated set
leave results.json for superseded.json with the reason; records on the current set, other
molecules' records and other sets' records stay."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
spec = importlib.util.spec_from_file_location("supersede", ROOT / "experiments/thesis_table/supersede.py")
sup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sup)

OLD, NEW, OTHER = "27e7" + "0" * 60, "5d41" + "1" * 60, "ffff" + "2" * 60


def rec(molecule, seed, sha=None):
    r = {"molecule": molecule, "labels": "gfn2-xtb", "protocol": "ef1000", "variant": "local", "seed": seed,
         "status": "ok"}
    return r if sha is None else dict(r, data_sha256=sha)


def test_moves_only_the_records_made_on_the_named_set(tmp_path):
    path = tmp_path / "results.json"
    recs = [rec("stachyose", 0), rec("stachyose", 1, OLD), rec("stachyose", 2, NEW), rec("stachyose", 3, OTHER),
            rec("aspirin", 0)]
    path.write_text(json.dumps(recs))
    moved = sup.supersede(path, "stachyose", "27e7", NEW, "regenerated", "cmd")
    assert [r["seed"] for r in moved] == [0, 1]  # the record naming no set, and the one naming the old set
    assert json.loads(path.read_text()) == recs[2:]
    entry, = json.loads((tmp_path / "superseded.json").read_text())
    assert entry["reason"] == "regenerated" and entry["current_sha256"] == NEW and entry["records"] == recs[:2]
    assert sup.supersede(path, "stachyose", "27e7", NEW, "again", "cmd") == []  # nothing left to move
    assert len(json.loads((tmp_path / "superseded.json").read_text())) == 1


def test_refuses_to_supersede_the_current_set(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([rec("stachyose", 0, NEW)]))
    with pytest.raises(SystemExit, match="current"):
        sup.supersede(path, "stachyose", NEW[:8], NEW, "oops", "cmd")
    assert len(json.loads(path.read_text())) == 1
