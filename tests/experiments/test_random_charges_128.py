"""experiments/longrange/random_charges_128.py without training: the geometry behind its
``drift`` diagnosis and the slope it reports (values worked by hand)."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("rc128", ROOT / "experiments/longrange/random_charges_128.py")
rc128 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rc128)


def test_cutoff_geometry_counts_only_pairs_beyond_the_cutoff_and_atoms_deep_inside():
    # a 12 Å cube: (6, 6, 6) is 6 Å from every face (bulk), the others within 4 Å of one
    pos = np.array([[6.0, 6.0, 6.0], [6.0, 6.0, 11.0], [6.0, 9.0, 6.0]])
    tail, bulk = rc128.cutoff_geometry(pos, 12.0)
    # pairs: 5 Å (beyond 4 Å), 3 Å (inside), sqrt(9 + 25) Å (beyond)
    a, rho = rc128.rc.A, rc128.rc.RHO
    expected = 1e3 * a * (math.exp(-5.0 / rho) + math.exp(-math.sqrt(34.0) / rho)) / 3
    assert math.isclose(tail, expected, rel_tol=1e-12)
    assert bulk == 1 / 3


def test_drift_lines_fit_the_signed_error_against_the_bulk_fraction(tmp_path, monkeypatch):
    rows = [{"n_atoms": n, "n_structures": 2, "signed_error_meV_per_atom": -2.0 * b,
             "signed_error_std_meV_per_atom": 0.1, "energy_mae_meV_per_atom": 2.0 * b,
             "tail_beyond_cutoff_meV_per_atom": 0.7 + 0.5 * b, "bulk_fraction": b}
            for n, b in ((128, 0.2), (512, 0.4), (1024, 0.6))]
    (tmp_path / "size_drift.json").write_text(json.dumps({"by_size": rows}))
    monkeypatch.setattr(rc128, "RESULTS", tmp_path)
    text = "\n".join(rc128.drift_lines())
    assert "falls by 2.00 meV/atom per unit of bulk fraction" in text
    assert "rises by only 0.50: 25 % of the drift" in text  # 0.5 / 2.0
    assert "| 512 | 2 | -0.800 ± 0.100 | 0.800 | 0.900 | 0.40 |" in text
    monkeypatch.setattr(rc128, "RESULTS", tmp_path / "none")
    assert rc128.drift_lines() == []
