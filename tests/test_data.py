"""Data loading (fastnn.data and the CLI's data flags): headers that are numbers, the
index column pandas writes, delimiters, stdin, Parquet, one label-column default for
train / evaluate / predict, and bad cells named by row and column. Every CSV test runs
on both engines: pandas, and numpy.loadtxt when pandas is missing."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from fastnn.data import DataError, load_dataset, read_table

pd = pytest.importorskip("pandas")


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastnn.cli", *args],
        capture_output=True,
        input=stdin,
        timeout=300,
    )


@pytest.fixture(params=["pandas", "numpy"])
def engine(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails
    return request.param


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    X = rng.normal(size=(3, 4))[y] * 3 + rng.normal(size=(90, 4))
    return X, y


def test_numeric_header_as_pandas_writes_it_is_a_header(
    tmp_path, blobs, engine, caplog
):
    X, y = blobs
    path = tmp_path / "d.csv"
    # integer column names 0..4: DataFrame.to_csv(index=False) writes "0,1,2,3,4"
    pd_frame(X, y).to_csv(path, index=False)
    Xl, yl = load_dataset(path)
    np.testing.assert_allclose(Xl, X)
    np.testing.assert_array_equal(yl, y)  # no extra row, no extra class
    assert any("read as column names" in r.getMessage() for r in caplog.records)
    # header="no" reads the row as data
    Xn, yn = load_dataset(path, header="no")
    assert Xn.shape == (91, 4) and yn[0] == 4


@pytest.mark.parametrize("names", [["a", "b", "c", "d", "label"], list("01234")])
def test_index_column_to_csv_writes_is_dropped_with_a_note(
    tmp_path, blobs, engine, caplog, names
):
    # names 0..4: what df.to_csv() writes for a frame with integer column names
    X, y = blobs
    order = np.random.default_rng(1).permutation(len(y))  # an index out of order
    path = tmp_path / "d.csv"
    # what DataFrame(...).to_csv() writes by default (index=True, unnamed index)
    rows = ["," + ",".join(names)] + [
        ",".join([str(i), *map(repr, X[i].tolist()), str(y[i])]) for i in order
    ]
    path.write_text("\n".join(rows) + "\n")
    table = read_table(path)
    np.testing.assert_allclose(table.X, X[order])
    np.testing.assert_array_equal(table.y, y[order])
    assert table.feature_names == names[:4]
    assert any("index" in n and "dropped" in n for n in table.notes)
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_unnamed_first_column_that_is_not_an_index_is_kept(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text(",b,y\n0.5,1,0\n0.25,2,1\n0.75,3,0\n")
    X, y = load_dataset(path)
    np.testing.assert_allclose(X, [[0.5, 1], [0.25, 2], [0.75, 3]])


def test_string_labels_in_the_first_row_are_data_not_a_header(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("1,2,cat\n3,4,dog\n5,6,cat\n")
    X, y = load_dataset(path)
    assert X.shape == (3, 2) and y.tolist() == ["cat", "dog", "cat"]
    path.write_text("x1,x2,label\n1,2,cat\n3,4,dog\n")
    X, y = load_dataset(path)
    assert X.shape == (2, 2) and y.tolist() == ["cat", "dog"]
    assert read_table(path).feature_names == ["x1", "x2"]


def test_delimiter_and_tsv(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("a;b;y\n1.5;2;0\n3;4;1\n")
    X, y = load_dataset(path, delimiter=";")
    np.testing.assert_allclose(X, [[1.5, 2], [3, 4]])
    tsv = tmp_path / "d.tsv"
    tsv.write_text("a\tb\ty\n1\t2\t0\n3\t4\t1\n")
    X, y = load_dataset(tsv)
    assert X.shape == (2, 2) and y.tolist() == [0, 1]


def test_non_numeric_and_empty_cells_are_named_by_row_and_column(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,2,0\n3,x7,1\n")
    with pytest.raises(DataError, match=r"row 2, column 'b': non-numeric value 'x7'"):
        load_dataset(path)
    path.write_text("a,b,y\n1,2,0\n3,,1\n")
    with pytest.raises(DataError, match=r"row 2, column 'b': an empty"):
        load_dataset(path)
    path.write_text("a,b,y\n1,2,0\n3,4\n")
    with pytest.raises(DataError, match=r"row 2 has 2 columns, expected 3"):
        load_dataset(path)


def test_bad_header_mode_and_delimiter_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,0\n")
    with pytest.raises(DataError, match="header"):
        load_dataset(path, header="maybe")
    with pytest.raises(DataError, match="one character"):
        load_dataset(path, delimiter=";;")


def test_stdin_csv_and_npz(monkeypatch, blobs):
    X, y = blobs
    text = pd_frame(X, y).to_csv(index=False).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
    Xl, yl = load_dataset("-")
    np.testing.assert_allclose(Xl, X)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    Xl, yl = load_dataset("-")
    np.testing.assert_array_equal(Xl, X)


def test_parquet(tmp_path, blobs):
    pytest.importorskip("pyarrow")
    X, y = blobs
    path = tmp_path / "d.parquet"
    pd_frame(X, y, names=["a", "b", "c", "d", "label"]).to_parquet(path)
    table = read_table(path)
    np.testing.assert_allclose(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert table.feature_names == ["a", "b", "c", "d"]
    X2, y2 = load_dataset(path, label_column="a")
    np.testing.assert_allclose(y2, X[:, 0])


def test_predict_uses_the_same_label_column_default(tmp_path, blobs):
    X, y = blobs
    labelled = tmp_path / "train.csv"
    pd_frame(X, y).to_csv(labelled, index=False)
    features = tmp_path / "features.csv"
    pd_frame(X, None).to_csv(features, index=False)
    model = tmp_path / "m.npz"
    common = ["--backend", "numpy"]
    out = run_cli("train", "--data", str(labelled), "--epochs", "2", "--hidden", "8",
                  "--quiet", "--out", str(model), *common)  # fmt: skip
    assert out.returncode == 0, out.stderr
    # the labelled file (one column more than the model's features): labels dropped
    with_labels = run_cli("predict", "--model", str(model), "--data", str(labelled),
                          *common)  # fmt: skip
    assert with_labels.returncode == 0, with_labels.stderr
    without = run_cli(
        "predict", "--model", str(model), "--data", str(features), *common
    )
    assert without.returncode == 0, without.stderr
    assert with_labels.stdout == without.stdout
    assert len(without.stdout.decode().splitlines()) == 1 + len(y)
    # a file that fits neither says what the model expects
    wrong = tmp_path / "wrong.csv"
    pd_frame(X[:, :2], None).to_csv(wrong, index=False)
    bad = run_cli("predict", "--model", str(model), "--data", str(wrong), *common)
    assert bad.returncode == 1
    assert b"the model expects 4 features" in bad.stderr


def test_cli_reads_stdin_and_takes_header_and_delimiter_flags(tmp_path, blobs):
    X, y = blobs
    text = pd_frame(X, y).to_csv(index=False, sep=";").encode()
    common = ["--epochs", "1", "--hidden", "8", "--json", "--backend", "numpy"]
    out = run_cli("train", "--data", "-", "--delimiter", ";", *common, stdin=text)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["layers"] == [4, 8, 3] and result["dataset"] == "-"
    assert b"read as column names" in out.stderr
    out = run_cli("train", "--data", "-", "--delimiter", ";", "--header", "no",
                  *common, stdin=text)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n_train"] + json.loads(out.stdout)["n_test"] == 91


def pd_frame(X, y, names=None):
    data = X if y is None else np.column_stack([X, y])
    frame = pd.DataFrame(data)
    if y is not None:
        frame[frame.columns[-1]] = frame[frame.columns[-1]].astype(int)
    if names is not None:
        frame.columns = names
    return frame


def test_npz_member_that_is_not_an_array_is_refused(tmp_path):
    # np.load hands back the raw bytes of a zip member without the .npy magic
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 2)))
    path = tmp_path / "raw.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X", b"hello")
        z.writestr("y.npy", buf.getvalue())
    with pytest.raises(DataError, match="'X' is not a .npy array"):
        load_dataset(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", buf.getvalue())
        z.writestr("y", b"junk")
    with pytest.raises(DataError, match="'y' is not a .npy array"):
        load_dataset(path)


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.zeros(4), np.arange(4) % 2, r"X must be 2-D \(rows, features\)"),
        (np.zeros((4, 2)), np.zeros((4, 2)) + [0, 1], None),  # 2-D y: regression
        (np.zeros((4, 2)), np.zeros((4, 2, 1)), "y must be 1-D or 2-D"),
        (np.zeros((0, 2)), np.zeros(0), "X has no rows"),
        (np.zeros((4, 0)), np.arange(4) % 2, "X has no feature columns"),
        (np.zeros((4, 2)), np.arange(3) % 2, "X has 4 rows but y has 3"),
    ],
)
def test_npz_arrays_of_the_wrong_shape_are_named(tmp_path, X, y, message):
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    if message is None:
        load_dataset(path)
        return
    with pytest.raises(DataError, match=message):
        load_dataset(path)


def test_cli_npz_with_1d_X_gives_a_clear_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(8.0), y=np.arange(8) % 2)
    out = run_cli("train", "--data", str(path), "--epochs", "1", "--quiet")
    assert out.returncode == 1
    err = out.stderr.decode()
    assert "IndexError" not in err and "X must be 2-D" in err, err


def test_missing_labels_in_parquet_are_refused_not_a_class(tmp_path, blobs):
    # None / pd.NA among string labels must not become the class "None" / "<NA>"
    pytest.importorskip("pyarrow")
    X, y = blobs
    labels = np.array(["a", "b", "c"], dtype=object)[y]
    labels[5] = None
    path = tmp_path / "d.parquet"
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame["label"] = labels
    frame.to_parquet(path)
    with pytest.raises(DataError, match="row 6: the label is missing"):
        load_dataset(path)
    frame["label"] = frame["label"].astype("string")  # pd.NA
    frame.to_parquet(path)
    with pytest.raises(DataError, match="row 6: the label is missing"):
        load_dataset(path)


def test_infinite_labels_are_named_by_row(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n1,0.5\n2,1e400\n3,1.5\n")
    with pytest.raises(DataError, match="row 2: the label is not finite"):
        load_dataset(path)


def test_infinite_cells_and_a_wrong_delimiter_are_named(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,-inf,1\n")
    with pytest.raises(DataError, match=r"row 2, column 'b': an infinite value \(-inf"):
        load_dataset(path)
    path.write_text("a;b;label\n1;2;0\n3;4;1\n")
    with pytest.raises(DataError, match="pass --delimiter ';', delimiter=';'"):
        load_dataset(path)
    assert load_dataset(path, delimiter=";")[0].shape == (2, 2)


def test_a_label_column_name_that_two_columns_share_is_refused(tmp_path, engine):
    # it silently took the first of them
    path = tmp_path / "d.csv"
    path.write_text("a,a,label\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"label column 'a' is ambiguous .* \[0, 1\]"):
        load_dataset(path, label_column="a")
    X, y = load_dataset(path, label_column=1)
    np.testing.assert_array_equal(y, [2, 4])
