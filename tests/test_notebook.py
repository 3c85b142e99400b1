"""notebooks/analysis.ipynb runs top to bottom (nbclient, a kernel on this interpreter) on synthetic records."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_collect import make_record, write_record

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


def test_analysis_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    results = tmp_path / "results"
    for rec in (make_record(score="dense", ppl=5.2), make_record(ppl=6.40, seed=0), make_record(ppl=6.60, seed=1),
                make_record(score="magnitude", ppl=15.0), make_record(sparsity=0.6, ppl=9.0)):
        write_record(results, rec)
    monkeypatch.setenv("REPRO_RESULTS", str(results))
    monkeypatch.setenv("REPRO_PAPER", "wanda")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # "python" in the kernel spec resolves to this interpreter (jupyter_client maps it to sys.executable).
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    text = "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "5 usable run records" in text
    assert "readme_llama2" in text and "coverage:" in text
    assert "reproduced" in text                           # the Wanda 50% LLaMA-2-7B cell: 6.50 vs 6.42
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
