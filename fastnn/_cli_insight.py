"""``fastnn explain`` and ``fastnn ood``: the insight subcommands of :mod:`fastnn.cli`.

Kept in their own module so that ``fastnn --help`` stays light; parsing conventions,
errors (one line, exit status 1; usage errors 2) and runtime options are those of
:mod:`fastnn.cli`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

_METHODS = ("integrated_gradients", "gradient_x_input", "gradient")


# ------------------------------------------------------------------ parsing
def _image_shape(text: str) -> tuple[int, int]:
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH like 8,8, got {text!r}"
        ) from None
    if len(shape) != 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected two integers >= 1 like 8,8, got {text!r}"
        )
    return shape  # type: ignore[return-value]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _fraction(text: str) -> float:
    v = _positive_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def add_parsers(
    sub: Any, runtime_options: Any, int_at_least: Any, data_options: Any
) -> None:
    """Add the ``explain`` and ``ood`` subparsers to ``sub`` (argparse helpers passed
    in by cli.py, which imports this module lazily)."""
    positive_int, count = int_at_least(1), int_at_least(0)
    x = sub.add_parser(
        "explain",
        help="saliency maps (PNG) and a ranked feature table of a saved model",
        description="Attribute a saved model's outputs to its input features: "
        "PNG saliency maps for image inputs (--image-shape), a ranked feature "
        "table (features.csv) and the raw attributions (attributions.npz).",
    )
    x.add_argument("--model", required=True, help="a model saved by 'fastnn train'")
    x.add_argument("--data", required=True, help=".npz with X (and y), or .csv")
    data_options(x, predict=True)
    x.add_argument("--out", required=True, help="output folder (created if missing)")
    x.add_argument(
        "--method",
        default="integrated_gradients",
        choices=_METHODS,
        help="attribution method (default integrated_gradients)",
    )
    x.add_argument(
        "--target",
        default="predicted",
        help="'predicted' (each row's predicted class logit, default), 'loss' (the "
        "cross-entropy against the data's labels) or a class label",
    )
    x.add_argument(
        "--steps",
        type=positive_int,
        default=None,  # 64; given with another --method: an error, not ignored
        help="integrated-gradients steps (default 64)",
    )
    x.add_argument(
        "--baseline",
        default=None,  # "zeros"; given with another --method: an error
        choices=["zeros", "mean"],
        help="integrated-gradients baseline: all zeros (default) or the data's mean "
        "row",
    )
    x.add_argument(
        "--image-shape",
        type=_image_shape,
        help="HEIGHT,WIDTH of image inputs (e.g. 8,8): write PNG saliency maps "
        "(default: not images)",
    )
    x.add_argument(
        "--max-images",
        type=count,
        default=16,
        help="saliency maps of the first N rows (default 16), plus their mean",
    )
    x.add_argument(
        "--reliance",
        action="store_true",
        help="also permutation feature importance (needs labels in --data)",
    )
    x.add_argument("--repeats", type=positive_int, default=5, help="default 5")
    x.add_argument("--seed", type=int, default=0, help="default 0")
    x.add_argument("--json", action="store_true", help="print one JSON result object")
    runtime_options(x)

    o = sub.add_parser(
        "ood",
        help="AUROC, FPR@95%%TPR: do confidence scores flag unfamiliar inputs?",
        description="How well max-softmax, entropy, energy and margin separate "
        "in-distribution inputs (--in) from out-of-distribution ones (--out-data).",
    )
    o.add_argument("--model", required=True, help="a model saved by 'fastnn train'")
    o.add_argument(
        "--in",
        dest="in_data",
        metavar="X_IN",
        required=True,
        help="in-distribution data: .npz with X (y optional), or .csv",
    )
    o.add_argument(
        "--out-data",
        metavar="X_OUT",
        required=True,
        help="out-of-distribution data (.npz or .csv)",
    )
    data_options(o, predict=True)
    t = o.add_mutually_exclusive_group()
    t.add_argument(
        "--temperature",
        type=_positive_float,
        default=None,
        help="divide the logits by this temperature (default 1)",
    )
    t.add_argument(
        "--calibrate",
        metavar="VAL",
        help="fit the temperature on held-out labelled data VAL (.npz or .csv; "
        "default: none)",
    )
    o.add_argument(
        "--tpr",
        type=_fraction,
        default=0.95,
        help="true-positive rate of the FPR column (default 0.95)",
    )
    o.add_argument(
        "--plots", metavar="DIR", help="write PNG plots to this folder (default: none)"
    )
    o.add_argument("--json", action="store_true", help="print one JSON result object")
    runtime_options(o)


# ------------------------------------------------------------------ helpers
def _out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _class_label(text: str, classes: np.ndarray) -> Any:
    for c in classes.tolist():
        if str(c) == text:
            return c
    raise ValueError(
        f"--target {text!r} is not 'predicted', 'loss' or a class of the model "
        f"{classes.tolist()}"
    )


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from .checkpoint import write_atomic

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def _load_model(args: argparse.Namespace):
    from .cli import load_model_arg

    return load_model_arg(args, backend=args.backend, n_threads=args.threads)


# ------------------------------------------------------------------ explain
def explain_command(args: argparse.Namespace) -> int:
    from . import explain
    from .cli import check_data_width, read_data

    model = _load_model(args)
    table = read_data(args, args.data, False, model.n_features_in_)
    X, y = table.X, table.y
    check_data_width(X, model, "--data", args.data)
    Xc = model._check_predict_X(X)
    n, d = Xc.shape
    if args.image_shape is not None and math.prod(args.image_shape) != d:
        h, w = args.image_shape
        raise ValueError(
            f"--image-shape {h},{w} has {h * w} pixels but the data has {d} features"
        )
    if args.target == "loss":
        target, y_arg, what = None, y, "the loss"
        if y is None:
            what += " against the predicted labels (the data has no labels)"
    elif args.target == "predicted":
        target, y_arg, what = "predicted", None, "the predicted class's logit"
    else:
        target = _class_label(args.target, model.classes_)
        y_arg, what = None, f"the logit of class {target}"
    if args.reliance and y is None:
        raise ValueError(
            "--reliance needs labels: --data must hold y (or pass --label-column)"
        )
    if args.method != "integrated_gradients":
        given = [f for f, v in (("--steps", args.steps), ("--baseline", args.baseline))
                 if v is not None]  # fmt: skip
        if given:
            raise ValueError(
                f"{' and '.join(given)} apply to --method integrated_gradients only, "
                f"not {args.method}"
            )
    n_steps = 64 if args.steps is None else args.steps
    out = _out_dir(args.out)
    if args.method == "integrated_gradients":
        baseline = Xc.mean(axis=0) if args.baseline == "mean" else None
        attr = explain.integrated_gradients(
            model, Xc, target, y=y_arg, baseline=baseline, n_steps=n_steps
        )
    elif args.method == "gradient_x_input":
        attr = explain.gradient_x_input(model, Xc, target, y=y_arg)
    else:
        attr = explain.input_gradients(model, Xc, target, y=y_arg)
    if args.image_shape is not None:
        h, w = args.image_shape
        names = [f"pixel[{r},{c}]" for r in range(h) for c in range(w)]
    else:
        names = table.feature_names or [f"x{j}" for j in range(d)]
    reliance = None
    if args.reliance:
        reliance = explain.feature_reliance(
            model,
            Xc,
            y,
            n_repeats=args.repeats,
            random_state=args.seed,
            feature_names=names,
        )
    rows = explain.feature_table(attr, feature_names=names, reliance=reliance)
    files = [explain.write_feature_table(out / "features.csv", rows)]
    predicted = model.predict(Xc)
    _save_npz(out / "attributions.npz", attributions=attr, predicted=predicted)
    files.append(out / "attributions.npz")
    if args.image_shape is not None:
        label = args.method.replace("_", " ")
        files.append(
            explain.saliency_map(
                np.abs(attr).mean(axis=0),
                out / "saliency_mean.png",
                image_shape=args.image_shape,
                title=f"Mean |{label}| over {n} rows",
                label=f"mean |{label}|",
            )
        )
        for i in range(min(n, args.max_images)):
            files.append(
                explain.saliency_map(
                    attr[i],
                    out / f"saliency_{i:04d}.png",
                    image_shape=args.image_shape,
                    image=Xc[i],
                    title=f"Row {i}: predicted {predicted[i]}"
                    + ("" if y is None else f", label {y[i]}"),
                    label=label,
                )
            )
    result = {
        "rows": n,
        "features": d,
        "method": args.method,
        "target": args.target,
        "out": str(out),
        "files": [str(f) for f in files],
        "top_features": rows[:10],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    steps = f", {n_steps} steps" if args.method == "integrated_gradients" else ""
    lines = [
        f"explained {n} rows with {args.method} of {what}{steps}",
        "top features by mean |attribution|:",
    ]
    width = max(7, *(len(r["feature"]) for r in rows[:10]))
    head = f"  rank  {'feature':<{width}}  mean |attr|"
    if reliance is not None:
        head += f"  reliance ({reliance.scoring} drop, mean ± std, rank)"
    lines.append(head)
    for r in rows[:10]:
        line = (
            f"  {r['rank']:>4}  {r['feature']:<{width}}  "
            f"{r['mean_abs_attribution']:>11.4g}"
        )
        if reliance is not None:
            line += (
                f"  {r['reliance_mean']:.4f} ± {r['reliance_std']:.4f}"
                f"  (#{r['reliance_rank']})"
            )
        lines.append(line)
    n_png = sum(1 for f in files if f.suffix == ".png")
    lines.append(
        "wrote features.csv, attributions.npz"
        + (f" and {n_png} PNG saliency maps" if n_png else "")
        + f" to {out}"
    )
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------- ood
def ood_command(args: argparse.Namespace) -> int:
    from . import calibration as cal
    from .cli import check_data_width, read_data

    model = _load_model(args)
    d = model.n_features_in_
    in_table = read_data(args, args.in_data, False, d)
    X_in, y_in = in_table.X, in_table.y
    X_out = read_data(args, args.out_data, False, d).X
    check_data_width(X_in, model, "--in", args.in_data)
    check_data_width(X_out, model, "--out-data", args.out_data)
    X_in = model._check_predict_X(X_in)
    X_out = model._check_predict_X(X_out)
    scored: Any = model
    result: dict[str, Any] = {
        "n_in": int(X_in.shape[0]),
        "n_out": int(X_out.shape[0]),
    }
    if args.calibrate:
        val = read_data(args, args.calibrate)
        X_val, y_val = val.X, val.y
        check_data_width(X_val, model, "--calibrate", args.calibrate)
        scored = cal.calibrate(model, X_val, y_val)
        result["temperature"] = scored.temperature_
        result["calibration_nll"] = [scored.nll_before_, scored.nll_after_]
    else:
        result["temperature"] = 1.0 if args.temperature is None else args.temperature
        if args.temperature is not None:
            scored = cal.TemperatureScaled(model, args.temperature)
    metrics = cal.ood_metrics(scored, X_in, X_out, tpr=args.tpr)
    result["scores"] = metrics
    fpr_key = next(k for k in metrics["max_softmax"] if k != "auroc")
    proba = None
    if y_in is not None:
        proba = scored.predict_proba(X_in)
        result["accuracy_in"] = float(model.score(X_in, y_in))
        result["ece_in"] = cal.expected_calibration_error(
            y_in, proba, classes=model.classes_
        )
        if scored is not model:
            result["ece_in_uncalibrated"] = cal.expected_calibration_error(
                y_in, model.predict_proba(X_in), classes=model.classes_
            )
    files = []
    if args.plots:
        out = _out_dir(args.plots)
        files.append(
            cal.ood_score_histograms(
                cal.ood_scores(scored, X_in),
                cal.ood_scores(scored, X_out),
                out / "ood_scores.png",
                metrics=metrics,
                title=f"Confidence scores (T = {result['temperature']:.3g}): "
                "in- vs out-of-distribution",
            )
        )
        if proba is not None:
            probs = {"model": proba}
            if scored is not model:
                probs = {
                    "uncalibrated": model.predict_proba(X_in),
                    f"T = {result['temperature']:.3g}": proba,
                }
            files.append(
                cal.reliability_diagram(
                    y_in,
                    probs,
                    out / "reliability.png",
                    classes=model.classes_,
                    title="Reliability on the in-distribution data",
                )
            )
        result["files"] = [str(f) for f in files]
    if args.json:
        print(json.dumps(result))
        return 0
    tpr = f"FPR@{100 * args.tpr:g}%TPR"
    lines = [
        f"in-distribution      {result['n_in']} rows ({args.in_data})",
        f"out-of-distribution  {result['n_out']} rows ({args.out_data})",
    ]
    if args.calibrate:
        nll0, nll1 = result["calibration_nll"]
        lines.append(
            f"temperature          {result['temperature']:.4g} (fitted on "
            f"{args.calibrate}: NLL {nll0:.4f} -> {nll1:.4f})"
        )
    else:
        lines.append(f"temperature          {result['temperature']:.4g}")
    if "accuracy_in" in result:
        ece = f"ECE {result['ece_in']:.4f}"
        if "ece_in_uncalibrated" in result:
            ece += f" (uncalibrated {result['ece_in_uncalibrated']:.4f})"
        lines.append(
            f"in-distribution      accuracy {result['accuracy_in']:.4f}, {ece}"
        )
    lines.append(f"  {'score':<12} {'AUROC':>7}  {tpr:>12}")
    for name, m in metrics.items():
        lines.append(f"  {name:<12} {m['auroc']:>7.4f}  {m[fpr_key]:>12.4f}")
    lines.append(
        "  (AUROC 1: perfect separation, 0.5: chance; FPR: out-of-distribution "
        "rows kept at that TPR)"
    )
    if files:
        lines.append("wrote " + ", ".join(str(f) for f in files))
    print("\n".join(lines))
    return 0
