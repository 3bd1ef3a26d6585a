"""The notebooks: each jupytext percent-format ``notebooks/NAME.py`` (the reviewed source) has its
paired ``NAME.ipynb`` with the same cells (kind and source), and every notebook's parameter cell
offers the two scales. The notebooks themselves are executed at smoke scale by nbmake (pytest
``--nbmake``, configured in pyproject.toml), as part of ``./run.sh test``."""

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
import nbformat  # noqa: E402 (installed with jupytext)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))


def test_the_three_notebooks_exist():
    assert {p.stem for p in SOURCES} >= {"quickstart", "bag_of_tricks", "library_api"}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_in_sync_with_its_py_source(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} missing: run jupytext --to ipynb {source}"
    want = jupytext.read(source)
    have = nbformat.read(paired, as_version=4)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(have) == cells(want), f"{paired.name} differs from {source.name}: jupytext --sync {source}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_parameter_cell_has_both_scales_and_the_colab_cell_is_guarded(source):
    nb = jupytext.read(source)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'SCALE = "smoke"' in params[0].source
    install = next(c for c in nb.cells if "REPO_URL" in c.source)
    assert 'if "google.colab" in sys.modules:' in install.source
    assert sum("REPO_URL = " in c.source for c in nb.cells) == 1  # the URL is written once
