"""Helpers for tests of PNG plots: capture the figures a module writes, and check
that every plot has a title and labelled axes."""

from __future__ import annotations


def capture_figures(monkeypatch, module) -> list:
    """Record each figure that ``module.write_figure`` saves (it still saves)."""
    figures = []
    original = module.write_figure

    def capture(fig, path, *args, **kwargs):
        figures.append(fig)
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(module, "write_figure", capture)
    return figures


def assert_titled_and_labelled(fig) -> None:
    """A title on the figure and on every visible plot, and both axes labelled."""
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    assert title or any(ax.get_title() for ax in axes)
    for ax in axes:
        if ax.get_visible():
            assert ax.get_title(), ax
            assert ax.get_xlabel() and ax.get_ylabel(), ax
