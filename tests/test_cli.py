"""`lrnn evaluate --json` and error reporting of the command line."""

import json
import subprocess
import sys

from lrnn.cli import main


def test_evaluate_json(trained_checkpoint, capsys, tmp_path):
    assert main(["evaluate", str(trained_checkpoint), "embedded:paracetamol-test", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for k in ("energy_mae", "energy_rmse", "force_mae", "force_rmse", "energy_unit", "force_unit", "n_structures"):
        assert k in res
    assert res["energy_unit"] == "kcal/mol" and res["force_unit"] == "kcal/mol/Angstrom"
    assert res["n_structures"] == 500
    assert main(["evaluate", str(trained_checkpoint), "embedded:paracetamol-test", "--unit", "eV",
                 "--parity", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "force (per component)" in out and "eV/Å" in out
    assert (tmp_path / "p.png").exists()


def test_cli_errors_are_messages(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "embedded:paracetamol-test"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "lrnn.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout
