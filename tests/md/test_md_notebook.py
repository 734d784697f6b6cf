"""Execute notebooks/md_energy_conservation.ipynb with few steps on the tiny test model."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_md_energy_conservation_notebook(trained_checkpoint, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("LRNN_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("LRNN_MD_CHECKPOINT", str(trained_checkpoint))
    monkeypatch.setenv("LRNN_NOTEBOOK_OUT", str(tmp_path / "nb"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    nb = nbformat.read(ROOT / "notebooks" / "md_energy_conservation.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "41 frames" in text and "compilations: 1" in text
    assert "drift_meV_per_atom_per_ps" in text
    assert (tmp_path / "nb" / "md_energy.png").exists()
