"""``model.summary()``: layers, output shapes and parameter counts, as Keras prints
them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .layers import Activation, Linear

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["model_summary"]


def model_summary(model: Sequential) -> str:
    """The summary table of ``model`` (one line per layer, then the totals)."""
    rows = [("Layer (type)", "Output Shape", "Param #")]
    width = model.n_features_in_
    total = 0
    counts: dict[str, int] = {}
    for layer in model.layers:
        kind = type(layer).__name__
        index = counts.get(kind, 0)
        counts[kind] = index + 1
        params = 0
        if isinstance(layer, Linear):
            width = layer.out_features
            params = layer.in_features * layer.out_features + (
                layer.out_features if layer.use_bias else 0
            )
        elif isinstance(layer, Activation) and kind == "Activation":
            kind = f"Activation: {layer.activation}"
        total += params
        name = f"{type(layer).__name__.lower()}_{index}"
        rows.append((f"{name} ({kind})", f"(None, {width})", f"{params:,}"))
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(3)]
    rule = "=" * sum(widths)

    def line(row: tuple[str, str, str]) -> str:
        return "".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))

    itemsize = model.dtype.itemsize
    fitted = "fitted" if model._is_fitted() else "not fitted"
    out = [f'Model: "{type(model).__name__}"', rule, line(rows[0]).rstrip(), rule]
    out += [line(r).rstrip() for r in rows[1:]]
    out += [
        rule,
        f"Total params: {total:,} ({_size(total * itemsize)}, {model.dtype})",
        f"Trainable params: {total:,}",
        "Non-trainable params: 0",
        f"Input: (None, {model.n_features_in_}); {fitted}"
        + (f", {len(model.classes_)} classes" if hasattr(model, "classes_") else ""),
    ]
    return "\n".join(out)


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.2f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")
