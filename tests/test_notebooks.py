"""Execute the notebooks (jupytext percent scripts) in a Jupyter kernel, in fast mode.

``HISCALE_FAST=1`` makes each notebook use a tiny sampler and few backtest
cells; every notebook ends with asserts on its own results. The two notebooks
on the real corpus build a leave-one-group-out prior for gpt3 (about a minute on
a cold cache, shared by both through ``$HISCALE_CACHE``).
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def _corpus_env() -> dict[str, str]:
    from conftest import corpus_path

    return {"HISCALE_CORPUS": str(corpus_path().resolve())}


@pytest.mark.parametrize(
    "name",
    [
        "01_quickstart",
        "02_reproducing_the_paper",
        "03_low_budget_family",
        "04_diagnostics_and_calibration",
        "05_planning_runs",
        "06_whole_curves",
    ],
)
def test_notebook_runs_in_fast_mode(name, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    # the inline back end renders every figure into the notebook (Agg would skip them)
    env = {"HISCALE_FAST": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if name.startswith(("02", "03", "06")):
        env.update(_corpus_env())
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process' environment
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "all checks passed" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the notebook's figures were not rendered"


def test_notebooks_are_percent_scripts():
    """Every notebook is a jupytext percent script that ends with its checks."""
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
    assert names == [
        "01_quickstart",
        "02_reproducing_the_paper",
        "03_low_budget_family",
        "04_diagnostics_and_calibration",
        "05_planning_runs",
        "06_whole_curves",
    ]
    for name in names:
        text = (NOTEBOOKS / f"{name}.py").read_text()
        assert "format_name: percent" in text and "# %% [markdown]" in text
        assert 'os.environ.get("HISCALE_FAST")' in text
        assert text.rstrip().endswith('print("all checks passed")')
        assert "/work/" not in text and "/home/" not in text  # no absolute paths
