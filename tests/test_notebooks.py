"""Every notebook runs top to bottom in a fresh kernel; each asserts its own cross-checks as it goes."""

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS] == ["00_forward", "01_tokenizer", "02_attention", "03_generation", "04_checkpoint",
                                          "05_training", "06_induction_heads", "07_tasks", "08_data_parallel", "09_chinese",
                                          "10_lora"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is missing: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is missing: pip install -e '.[test]'")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")  # the kernel's own start-up chatter is not the notebook's
    nb = nbformat.read(path, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    # run in a directory of its own (nbsetup imported from notebooks/, no bytecode written), so that nothing the
    # notebook writes lands in the repository
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and the traceback, on any error
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_the_notebooks_extra_installs_jupyter_and_the_notebooks_say_which_model_they_run_on():
    import re

    pyproject = (NOTEBOOKS[0].parents[1] / "pyproject.toml").read_text()
    extra = re.search(r"^notebooks = \[(.*)\]$", pyproject, re.M)[1]
    assert re.search(r'"(jupyterlab|notebook)\b', extra), extra
    setup = (NOTEBOOKS[0].parent / "nbsetup.py").read_text()
    assert 'GPT2.from_pretrained("tiny")' in setup and "train(" not in setup, "the bundled model, nothing trained"


def test_no_notebook_draws_a_progress_bar():
    """A bar's redraws (carriage returns, cursor-up escapes) would fill a saved notebook's output."""
    for path in NOTEBOOKS:
        text = path.read_text()
        assert "tqdm" not in text and "progress=True" not in text, path.name
