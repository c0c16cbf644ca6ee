"""``fastnn explain`` and ``fastnn ood``: outputs, files and error paths."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn.cli import main


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """A digits model, test images with labels, a validation split, noise images."""
    root = tmp_path_factory.mktemp("insight")
    X_tr, X_te, y_tr, y_te = fastnn.load_digits_split()
    model = fastnn.MLP((64, 32, 10))
    model.fit(X_tr, y_tr, epochs=10, seed=0, verbose=0)
    model.save(root / "model.npz")
    np.savez(root / "test.npz", X=X_te[:60], y=y_te[:60])
    np.savez(root / "val.npz", X=X_te[60:], y=y_te[60:])
    np.savez(root / "images.npz", X=X_te[:30])  # no labels
    rng = np.random.default_rng(0)
    noise = rng.uniform(-np.sqrt(3), np.sqrt(3), size=(120, 64))
    np.savez(root / "noise.npz", X=noise)
    np.savez(root / "wide.npz", X=np.ones((3, 65)))
    (root / "bad.npz").write_text("not a model")
    return {p.stem: str(p) for p in root.iterdir()} | {"root": root}


def test_explain_images_writes_maps_table_and_attributions(digits_files, capsys):
    out = digits_files["root"] / "explained"
    code = main(
        [
            "explain",
            "--model",
            digits_files["model"],
            "--data",
            digits_files["test"],
            "--out",
            str(out),
            "--image-shape",
            "8,8",
            "--max-images",
            "1",
            "--steps",
            "16",
            "--reliance",
            "--repeats",
            "2",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "explained 60 rows with integrated_gradients" in text
    assert "16 steps" in text and "pixel[" in text and "reliance" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["saliency_0000.png", "saliency_mean.png"]
    with open(out / "features.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64 and rows[0]["rank"] == "1"
    assert {"feature", "mean_abs_attribution", "reliance_mean", "reliance_rank"} <= set(
        rows[0]
    )
    mean_abs = [float(r["mean_abs_attribution"]) for r in rows]
    assert mean_abs == sorted(mean_abs, reverse=True)
    with np.load(out / "attributions.npz") as npz:
        attr = npz["attributions"]
        assert attr.shape == (60, 64)
        model = fastnn.load(digits_files["model"])
        X = np.load(digits_files["test"])["X"]
        np.testing.assert_array_equal(npz["predicted"], model.predict(X))
    expected = fastnn.explain.integrated_gradients(model, X, n_steps=16)
    np.testing.assert_allclose(attr, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method, target", [("gradient", "loss"), ("gradient_x_input", "3")]
)
def test_explain_json_methods_and_targets(digits_files, capsys, method, target):
    out = digits_files["root"] / f"json-{method}"
    code = main(
        [
            "explain",
            "--model",
            digits_files["model"],
            "--data",
            digits_files["images"],
            "--out",
            str(out),
            "--method",
            method,
            "--target",
            target,
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 30 and result["method"] == method
    assert [r["rank"] for r in result["top_features"]] == list(range(1, 11))
    assert not list(out.glob("*.png"))  # no --image-shape: no maps
    model = fastnn.load(digits_files["model"])
    X = np.load(digits_files["images"])["X"]
    if target == "loss":  # no labels in the file: the loss of the predicted labels
        expected = fastnn.explain.input_gradients(model, X)
    else:
        expected = fastnn.explain.gradient_x_input(model, X, 3)
    with np.load(out / "attributions.npz") as npz:
        np.testing.assert_allclose(npz["attributions"], expected, rtol=1e-6)


def test_explain_tabular_csv_uses_header_names(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = np.where(X[:, 1] > 0, "up", "down")
    model = fastnn.MLP((3, 8, 2), backend="numpy", optimizer=fastnn.Adam(lr=0.02))
    model.fit(X, y, epochs=40, seed=0, verbose=0)
    assert model.score(X, y) > 0.9
    model.save(tmp_path / "m.npz")
    lines = ["alpha,beta,label,gamma"] + [
        f"{a},{b},{c},{d}" for (a, b, d), c in zip(X, y, strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    code = main(
        [
            "explain",
            "--model",
            str(tmp_path / "m.npz"),
            "--data",
            str(tmp_path / "d.csv"),
            "--label-column",
            "label",
            "--out",
            str(tmp_path / "out"),
            "--reliance",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    with open(tmp_path / "out" / "features.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["feature"] == "beta" and rows[0]["reliance_rank"] == "1"
    assert {r["feature"] for r in rows} == {"alpha", "beta", "gamma"}
    assert "beta" in text


def test_ood_text_json_calibration_and_plots(digits_files, capsys):
    base = [
        "ood",
        "--model",
        digits_files["model"],
        "--in",
        digits_files["test"],
        "--out-data",
        digits_files["noise"],
    ]
    assert main(base) == 0
    text = capsys.readouterr().out
    for word in ("max_softmax", "entropy", "energy", "margin", "AUROC", "FPR@95%TPR"):
        assert word in text
    assert "in-distribution      accuracy" in text and "ECE" in text

    plots = digits_files["root"] / "plots"
    assert (
        main(
            base + ["--json", "--calibrate", digits_files["val"], "--plots", str(plots)]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    model = fastnn.load(digits_files["model"])
    val = np.load(digits_files["val"])
    scaled = fastnn.calibrate(model, val["X"], val["y"])
    assert result["temperature"] == pytest.approx(scaled.temperature_)
    X_in = np.load(digits_files["test"])["X"]
    X_out = np.load(digits_files["noise"])["X"]
    expected = fastnn.calibration.ood_metrics(scaled, X_in, X_out)
    for name, metrics in expected.items():
        assert result["scores"][name] == pytest.approx(metrics)
    assert {"ece_in", "ece_in_uncalibrated", "accuracy_in"} <= set(result)
    assert sorted(p.name for p in plots.glob("*.png")) == [
        "ood_scores.png",
        "reliability.png",
    ]

    assert main(base + ["--json", "--temperature", "2", "--tpr", "0.9"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["temperature"] == 2.0
    assert "fpr_at_90_tpr" in result["scores"]["energy"]


# the command lines the error cases extend (paths filled in by the test)
EXPLAIN = ["explain", "--model", "{model}", "--data", "{test}", "--out", "{o}"]
OOD = ["ood", "--model", "{model}", "--in", "{test}", "--out-data", "{noise}"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["explain", "--model", "{model}", "--data", "missing.npz", "--out", "{o}"],
            "does not exist",
        ),
        (
            ["explain", "--model", "missing.npz", "--data", "{test}", "--out", "{o}"],
            "--model: checkpoint 'missing.npz' does not exist",
        ),
        (
            ["explain", "--model", "{bad}", "--data", "{test}", "--out", "{o}"],
            "damaged or not a checkpoint",
        ),
        (
            ["explain", "--model", "{model}", "--data", "{wide}", "--out", "{o}"],
            "--data '{wide}' has 65 feature columns, but the --model expects 64",
        ),
        (
            [*EXPLAIN, "--image-shape", "8,7"],
            "has 56 pixels but the data has 64 features",
        ),
        (
            [*EXPLAIN, "--target", "11"],
            "is not 'predicted', 'loss' or a class",
        ),
        (
            [
                "explain",
                "--model",
                "{model}",
                "--data",
                "{images}",
                "--out",
                "{o}",
                "--reliance",
            ],
            "--reliance needs labels",
        ),
        (
            ["explain", "--model", "{model}", "--data", "{test}", "--out", "{model}"],
            "exists and is not a folder",
        ),
        (  # ignored before: the method has no steps or baseline
            [
                *EXPLAIN,
                "--method",
                "gradient_x_input",
                "--steps",
                "8",
                "--baseline",
                "mean",
            ],
            "--steps and --baseline apply to --method integrated_gradients only, "
            "not gradient_x_input",
        ),
        (
            [*EXPLAIN, "--image-shape", "8"],
            "expected two integers",
        ),
        (
            [*EXPLAIN, "--method", "lime"],
            "invalid choice: 'lime'",
        ),
        (
            ["explain", "--model", "{model}", "--data", "{test}"],
            "the following arguments are required: --out",
        ),
        (
            [*EXPLAIN, "--steps", "0"],
            "expected an integer >= 1",
        ),
        (
            ["ood", "--model", "{model}", "--in", "{test}", "--out-data", "nope.npz"],
            "does not exist",
        ),
        (
            ["ood", "--model", "{bad}", "--in", "{test}", "--out-data", "{noise}"],
            "damaged or not a checkpoint",
        ),
        (
            ["ood", "--model", "{model}", "--in", "{test}", "--out-data", "{wide}"],
            "--out-data '{wide}' has 65 feature columns, but the --model expects 64",
        ),
        (
            [*OOD, "--calibrate", "{noise}"],
            "has no array 'y'",
        ),
        (
            [*OOD, "--temperature", "0"],
            "expected a number > 0",
        ),
        (
            [*OOD, "--tpr", "1.5"],
            "expected a number in (0, 1]",
        ),
        (
            [*OOD, "--temperature", "2", "--calibrate", "{val}"],
            "not allowed with",
        ),
        (
            ["ood", "--model", "{model}", "--in", "{test}"],
            "the following arguments are required: --out-data",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_insight_errors_are_one_line(digits_files, tmp_path, capsys, args, message):
    paths = {k: v for k, v in digits_files.items() if k != "root"}
    argv = [a.format(o=str(tmp_path / "o"), **paths) for a in args]
    usage = any(
        s in message for s in ("expected", "invalid choice", "required", "allowed")
    )
    if usage:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    else:
        assert main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith("fastnn: error: "), err
    assert message.format(o=str(tmp_path / "o"), **paths) in err
    assert "Traceback" not in captured.err + captured.out


def test_insight_commands_in_a_fresh_process(digits_files):
    help_text = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "explain" in help_text and "ood" in help_text
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastnn.cli",
            "ood",
            "--model",
            digits_files["model"],
            "--in",
            digits_files["test"],
            "--out-data",
            "none.npz",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "fastnn: error: data file 'none.npz' does not exist"
