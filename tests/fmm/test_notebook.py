"""Execute notebooks/fmm_accuracy_and_scaling.ipynb with tiny sizes."""

import os
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[2] / "notebooks" / "fmm_accuracy_and_scaling.ipynb"


def test_fmm_notebook_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("LRNN_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB.parent)}})
    client.execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert "rel. RMS error" in out
    errs = [float(line.split("error")[-1]) for line in out.splitlines() if "rel. RMS error" in line]
    assert max(errs) < 1e-3
    assert os.environ["LRNN_NB_SMALL"] == "1"
