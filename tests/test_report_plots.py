"""The benchmark report's charts, drawn from the committed report's results.json: a
readable percent-of-peak chart, a compile-time legend that hides nothing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fastnn.bench import report

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "results.json"


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text())


@pytest.fixture
def drawn(results, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    figures = {}
    close = plt.close

    def keep(fig=None):  # record every figure _plots closes, by its file name
        figures[len(figures)] = fig
        return close(fig)

    monkeypatch.setattr(plt, "close", keep)
    made = report._plots(results, tmp_path)
    by_key = dict(zip(made, figures.values(), strict=True))
    return tmp_path, made, by_key


def _png_height(path: Path) -> int:
    return struct.unpack(">II", path.read_bytes()[16:24])[1]


def test_pct_of_peak_is_one_row_per_op_and_shape(results, drawn):
    out, made, figs = drawn
    fig = figs["pct_of_peak"]
    (ax, *_) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    ops = {f"{r['op']} | {r['shape']}" for r in results["ops"] if r["pct_of_peak"]}
    train = {
        f"train {r['workload']} | b{r['batch_size']}"
        for r in results["training"]
        if r.get("pct_of_sgemm_peak") is not None
    }
    assert sorted(labels) == sorted(ops | train)
    assert all(t.get_fontsize() >= 8 for t in ax.get_yticklabels())
    # about 0.3 inch a row at 110 dpi, plus the title and the axis label
    assert _png_height(out / made["pct_of_peak"]) <= 110 * (0.3 * len(labels) + 1.8)
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    names = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"numba", "cython", "numpy"} <= names


def test_compile_time_legend_is_beside_the_bars(drawn, results):
    _, _, figs = drawn
    fig = figs["compile_time"]
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # outside the plotting area
    assert len(ax.get_legend().get_texts()) == 4
    # a total at the end of every bar (two bars may show the same total)
    rows = results["compile"]
    assert len(ax.texts) == len(rows)
    for text, r in zip(ax.texts, rows, strict=True):
        total = (r["import_s"] + r["load_s"] + r["compile_s"]
                 + r["steady_step_s"]["median"])  # fmt: skip
        assert text.get_text() == f" {total:.2f} s"
