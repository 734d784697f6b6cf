"""Execute the quickstart notebook with small settings."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_notebook(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("LRNN_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("LRNN_NOTEBOOK_OUT", str(tmp_path / "nb"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "force (per component)" in outputs and "eV" in outputs
    assert (tmp_path / "nb" / "checkpoint" / "lrnn.json").exists()
    assert os.path.exists(tmp_path / "nb" / "parity.png")
