"""Model files and prediction: train -> save -> predict.py on raw rows, checked against an
independent NumPy forward pass and scikit-learn's preprocessing and metrics."""

from __future__ import annotations

import collections
import dataclasses
import json
import re

import _cli
import export
import numpy as np
import predict
import pytest
import train
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder as SkLabelEncoder
from sklearn.preprocessing import StandardScaler

from backends.errors import ConfigError
from model.checkpoint import CheckpointError
from model.preprocessing import LabelEncoder, Standardizer, resolve_targets
from model.trained import TrainedModel


def _cli_call(capsys, main, flags, *argv):
    rc = _cli.run(main, list(argv), flags)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _forward(params, X, hidden="relu"):
    """The network's output in plain NumPy: relu/tanh hidden layers, the last one linear."""
    A, depth = X, len(params) // 2
    for l in range(1, depth + 1):
        Z = A @ params[f"W{l}"] + params[f"b{l}"]
        A = Z if l == depth else (np.maximum(Z, 0) if hidden == "relu" else np.tanh(Z))
    return A


def _raw_data(rng, n=240):
    """Features on very different scales; labels 3, 7, 9 from two thresholds."""
    X = rng.normal(size=(n, 4)) * [1.0, 10.0, 100.0, 0.1] + [0.0, 5.0, 50.0, 1.0]
    y = np.array([3, 7, 9])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 5).astype(int)]
    return X, y


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_a_model_trained_on_labels_3_7_9_predicts_3_7_9_from_raw_rows(capsys, tmp_path, device):
    rng = np.random.default_rng(0)
    X, y = _raw_data(rng)
    np.savetxt(tmp_path / "raw.csv", np.c_[X, y], delimiter=",", header="a,b,c,d,y", comments="")
    rc, _, err = _cli_call(capsys, train.main, train.FLAGS, "--data", str(tmp_path / "raw.csv"),
                           "--standardize", "--save", str(tmp_path / "m.npz"), "--device", device,
                           "--out", str(tmp_path / "run"), "--quiet", "--dtype", "float64",
                           "--epochs", "60")  # fmt: skip
    assert rc == 0, err
    # The saved standardization is scikit-learn's, fitted on the same training split.
    X_tr, _, _, _ = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    trained = TrainedModel.load(tmp_path / "m.npz")
    np.testing.assert_allclose(trained.standardizer.mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(trained.standardizer.sd, scaler.scale_, rtol=1e-12)
    # predict.py on the raw rows (with their labels: metrics too)
    rc, out, err = _cli_call(capsys, predict.main, predict.FLAGS, str(tmp_path / "m.npz"),
                             "--data", str(tmp_path / "raw.csv"), "--device", device,
                             "--proba")  # fmt: skip
    assert rc == 0, err
    table = np.loadtxt(out.splitlines(), delimiter=",", skiprows=1)
    assert out.splitlines()[0] == "prediction,p_3,p_7,p_9"
    logits = _forward(trained.params, scaler.transform(X))
    expected = np.array([3, 7, 9])[np.argmax(logits, axis=1)]
    np.testing.assert_array_equal(table[:, 0], expected)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(table[:, 1:], p / p.sum(axis=1, keepdims=True), rtol=1e-10)
    assert set(np.unique(table[:, 0])) <= {3, 7, 9} and np.mean(table[:, 0] == y) > 0.9
    accuracy = float(err.split("accuracy ")[1].split()[0])
    assert accuracy == pytest.approx(np.mean(expected == y), abs=1e-4)


def test_a_regression_model_round_trips_to_1e_12(capsys, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 3)) * [1, 50, 0.01]
    y = np.sin(X[:, 0]) + X[:, 1] / 50
    np.savez(tmp_path / "d.npz", X=X, y=y)
    rc, _, err = _cli_call(capsys, train.main, train.FLAGS, "--data", str(tmp_path / "d.npz"),
                           "--loss", "mse", "--standardize", "--activation", "tanh",
                           "--hidden", "6,5", "--dtype", "float64", "--epochs", "30", "--device",
                           "cpu", "--save", str(tmp_path / "m.npz"), "--out", str(tmp_path / "r"),
                           "--quiet")  # fmt: skip
    assert rc == 0, err
    np.savez(tmp_path / "x.npz", X=X)
    rc, out, err = _cli_call(capsys, predict.main, predict.FLAGS, str(tmp_path / "m.npz"),
                             "--data", str(tmp_path / "x.npz"), "--device", "cpu")  # fmt: skip
    assert rc == 0 and err == "", err
    got = np.loadtxt(out.splitlines(), skiprows=1)
    trained = TrainedModel.load(tmp_path / "m.npz")
    expected = _forward(trained.params, (X - trained.standardizer.mean) / trained.standardizer.sd,
                        hidden="tanh")[:, 0]  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    np.save(tmp_path / "x.npy", X)  # the same rows as a .npy table of features
    rc, from_npy, err = _cli_call(capsys, predict.main, predict.FLAGS, str(tmp_path / "m.npz"),
                                  "--data", str(tmp_path / "x.npy"), "--device", "cpu")  # fmt: skip
    assert rc == 0 and from_npy == out and "a .npy table, no labels" in err


def test_evaluate_matches_scikit_learn(tmp_path):
    rng = np.random.default_rng(2)
    X, y = _raw_data(rng, n=90)
    from model.mlp import MLP

    model = MLP((4, 5, 3), activation="tanh", loss="cross_entropy")
    params = {k: rng.normal(size=s) for k, s in model.param_shapes().items()}
    trained = TrainedModel(model, params, "float64", Standardizer.fit(X), LabelEncoder.fit(y))
    metrics = trained.evaluate(X, y)
    predicted = trained.predict(X)
    assert metrics["confusion"] == confusion_matrix(y, predicted, labels=[3, 7, 9]).tolist()
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == y))
    logits = _forward(params, (X - X.mean(axis=0)) / X.std(axis=0), hidden="tanh")
    index = np.searchsorted([3, 7, 9], y)
    lse = np.log(np.exp(logits).sum(axis=1))
    assert metrics["loss"] == pytest.approx(np.mean(lse - logits[np.arange(90), index]), 1e-12)


def _model_file(tmp_path):
    rng = np.random.default_rng(3)
    from model.mlp import MLP

    model = MLP((2, 3, 3), activation="relu", loss="cross_entropy")
    params = {k: rng.normal(size=s) for k, s in model.param_shapes().items()}
    X = rng.normal(size=(10, 2))
    trained = TrainedModel(
        model, params, "float32", Standardizer.fit(X), LabelEncoder.fit([1, 5, 6])
    )
    return trained.save(tmp_path / "m.npz")


def _rewrite(path, change):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    change(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, m: m.update(format="handgrad-checkpoint-1"), "handgrad 0.1"),
        (lambda a, m: m.update(format_version=4), "written by a newer handgrad"),
        (lambda a, m: m.update(format_version=1), "is not a handgrad model file"),
        (
            lambda a, m: m["network"]["layers"][0].update(activation="swish"),
            "unknown activation 'swish'",
        ),
        (
            lambda a, m: [
                m["network"]["layers"][0].update(outputs=4),
                m["network"]["layers"][1].update(inputs=4),
            ],
            "W1 has shape (2, 3)",
        ),
        (lambda a, m: m["network"]["layers"][0].pop("inputs"), "layer 'dense'"),
        (lambda a, m: m["network"].update(loss="hinge"), "unknown loss 'hinge'"),
        (lambda a, m: m.update(replicas=0), "'replicas' must be null or a count"),
        (
            lambda a, m: m["network"]["layers"][0].update(bias=False),
            "arrays the model (2, 3, 3) does not have: b1 (the model has no biases)",
        ),
        (lambda a, m: a.update(W3=np.ones(2)), "arrays the model (2, 3, 3) does not have: W3"),
        (lambda a, m: a.update(W1=np.ones((2, 3), dtype=np.int64)), "W1 holds int64 values"),
        (lambda a, m: m.update(dtype="float16"), "dtype must be one of"),
        (lambda a, m: m.update(classes=[1, 5]), "3 distinct sorted integers"),
        (lambda a, m: m.update(classes=[5, 1, 6]), "3 distinct sorted integers"),
        (lambda a, m: m["preprocessing"]["standardize"].update(sd=[1.0, 0.0]), "sd <= 0"),
        (lambda a, m: m["preprocessing"]["standardize"].update(mean=[0.0]), "standardization"),
        (lambda a, m: a.update(W2=np.full((3, 3), np.nan)), "W2 contains NaN or inf"),
    ],
)
def test_loading_checks_every_field(tmp_path, change, message):
    path = _model_file(tmp_path)
    TrainedModel.load(path)  # valid before the change
    _rewrite(path, change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainedModel.load(path)


def test_a_model_file_is_not_a_checkpoint_and_a_damaged_meta_is_named(tmp_path, capsys):
    path = _model_file(tmp_path)
    rc, _, err = _cli_call(
        capsys, train.main, train.FLAGS, "--resume", str(path), "--device", "cpu"
    )
    assert rc == 2 and "without training state" in err
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for damaged in ("{not json", "[" * 100_000 + "]" * 100_000):  # the second: too deep to parse
        np.savez(path, **{**arrays, "meta": np.array(damaged)})
        with pytest.raises(CheckpointError, match="not a JSON object"):
            TrainedModel.load(path)


def test_predict_bad_input_is_one_line(capsys, tmp_path):
    path = str(_model_file(tmp_path))
    np.savetxt(tmp_path / "three.csv", np.ones((4, 4)), delimiter=",")
    bad = np.ones((4, 2))
    bad[1, 1] = np.nan
    np.savetxt(tmp_path / "nan.csv", bad, delimiter=",")
    (tmp_path / "file").write_text("x")
    np.savetxt(tmp_path / "huge.csv", np.full((4, 2), 1e300), delimiter=",")
    np.savetxt(tmp_path / "two.csv", np.ones((4, 2)), delimiter=",")
    diverged = TrainedModel.load(path)  # as a diverged run may leave it: finite, huge
    huge_params = {k: np.full_like(v, 1e200) for k, v in diverged.params.items()}
    diverged = dataclasses.replace(diverged, params=huge_params, standardizer=None)
    huge = str(diverged.save(tmp_path / "diverged.npz"))
    for argv, message in [
        (
            [path, "--data", str(tmp_path / "huge.csv"), "--quiet"],
            "beyond float32's range (3.4e+38); use float64",
        ),
        (
            [huge, "--data", str(tmp_path / "two.csv"), "--dtype", "float64", "--quiet"],
            "the model's outputs are NaN or infinite for 4 of 4 rows (the first: row 0)",
        ),
        ([path, "--data", str(tmp_path / "three.csv")], "has 4 columns but the model takes 2"),
        ([path, "--data", str(tmp_path / "nan.csv")], "NaN or inf value(s), the first in row 1"),
        ([str(tmp_path / "three.csv"), "--data", str(tmp_path / "nan.csv")], "not an .npz"),
        (
            [path, "--data", str(tmp_path / "nan.csv"), "--out", str(tmp_path / "file" / "p")],
            "not a writable folder",
        ),
    ]:
        rc, out, err = _cli_call(capsys, predict.main, predict.FLAGS, *argv, "--device", "cpu")
        assert rc == 2 and out == "" and err.count("\n") == 1 and message in err, err
        assert re.search(r"\((--[a-z]+|MODEL)\)$", err.strip()), err


def test_standardizer_equals_scikit_learn_and_keeps_constant_features_finite():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3)) * [1e-3, 1e3, 1] + [5, -7, 0]
    X[:, 2] = 4.0  # constant
    ours, theirs = Standardizer.fit(X), StandardScaler().fit(X)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-12, atol=1e-12)


def test_label_encoder_equals_scikit_learn_and_refuses_unknown_labels():
    y = np.array([9, 3, 7, 3, 9, 9])
    ours, theirs = LabelEncoder.fit(y), SkLabelEncoder().fit(y)
    np.testing.assert_array_equal(ours.encode(y), theirs.transform(y))
    np.testing.assert_array_equal(ours.decode([2, 0]), theirs.inverse_transform([2, 0]))
    with pytest.raises(ValueError, match="label 4 is not one of the model's 3 classes"):
        ours.encode([4])


@pytest.mark.parametrize(
    "y, loss, expected",
    [
        (np.array([0.0, 1e5, 0.0, 1e5]), None, ("cross_entropy", 2)),  # two classes, not 100001
        (np.array([0.5, 1.0, 0.0, 0.5]), None, ("mse", 1)),
        (np.array([3, 7, 7, 3]), "bce", ("bce", 1)),
    ],
)
def test_loss_inference(y, loss, expected):
    targets = resolve_targets(y, loss)
    assert (targets.loss, targets.outputs) == expected
    assert targets.reason.startswith("inferred") == (loss is None)


def test_standardizer_reads_a_memory_mapped_file_like_an_array(tmp_path):
    X = np.random.default_rng(5).normal(size=(70_000, 3)) * [1, 5, 9]  # two chunks
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    ours, theirs = Standardizer.fit(mapped), StandardScaler().fit(X)
    np.testing.assert_allclose(ours.mean, theirs.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.sd, theirs.scale_, rtol=1e-12)


def test_predict_writes_nothing_when_the_labels_are_not_the_models(capsys, tmp_path):
    path = str(_model_file(tmp_path))  # classes 1, 5, 6
    np.savetxt(tmp_path / "rows.csv", np.c_[np.ones((3, 2)), [1, 5, 7]], delimiter=",")
    rc, _, err = _cli_call(capsys, predict.main, predict.FLAGS, path, "--data",
                           str(tmp_path / "rows.csv"), "--out", str(tmp_path / "p.csv"),
                           "--device", "cpu")  # fmt: skip
    assert rc == 2 and "label 7 is not one of the model's 3 classes" in err
    assert not (tmp_path / "p.csv").exists()


def test_predict_never_replaces_its_inputs_or_an_existing_file(capsys, tmp_path):
    path = str(_model_file(tmp_path))
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, np.ones((3, 2)), delimiter=",")
    before = rows.read_bytes()
    for out, message in [(str(rows), "is an input"), (path, "is an input")]:
        rc, _, err = _cli_call(capsys, predict.main, predict.FLAGS, path, "--data", str(rows),
                               "--out", out, "--device", "cpu")  # fmt: skip
        assert rc == 2 and message in err and err.count("\n") == 1
    assert rows.read_bytes() == before
    (tmp_path / "old.csv").write_text("old")
    argv = [path, "--data", str(rows), "--out", str(tmp_path / "old.csv"), "--device", "cpu"]
    rc, _, err = _cli_call(capsys, predict.main, predict.FLAGS, *argv)
    assert rc == 2 and "already exists" in err
    assert _cli_call(capsys, predict.main, predict.FLAGS, *argv, "--overwrite")[0] == 0
    assert (tmp_path / "old.csv").read_text().startswith("prediction")


def test_no_output_replaces_a_run_folders_own_files_even_with_overwrite(capsys, tmp_path):
    """A run folder's checkpoint, metrics.json and loss.png are its resume, record and
    plot: predict.py --out and train.py --save refuse them whatever run they belong to;
    and predictions, CSV text, are not written under a .npz or .npy name."""
    run = tmp_path / "run"
    assert _cli.run(train.main, ["--dataset", "iris", "--hidden", "4", "--epochs", "1",
                                 "--device", "cpu", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    before = {f: (run / f).read_bytes() for f in ("checkpoint.npz", "metrics.json", "loss.png")}
    np.savetxt(tmp_path / "rows.csv", np.ones((3, 4)), delimiter=",")
    for name in before:
        argv = [str(run), "--data", str(tmp_path / "rows.csv"), "--device", "cpu",
                "--out", str(run / name), "--overwrite"]  # fmt: skip
        rc, _, err = _cli_call(capsys, predict.main, predict.FLAGS, *argv)
        assert rc == 2 and f"{run / name} is a file of the run in {run}" in err, err
    argv = ["--dataset", "iris", "--hidden", "4", "--epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "other"), "--save", str(run / "checkpoint.npz"),
            "--overwrite"]  # fmt: skip
    rc, _, err = _cli_call(capsys, train.main, train.FLAGS, *argv)
    assert rc == 2 and "is a file of the run in" in err and "(--save)" in err, err
    assert before == {f: (run / f).read_bytes() for f in before}
    for name in ("p.npz", "p.NPY"):
        argv = [str(run), "--data", str(tmp_path / "rows.csv"), "--out", str(tmp_path / name)]
        rc, _, err = _cli_call(capsys, predict.main, predict.FLAGS, *argv)
        assert rc == 2 and "predictions are written as CSV text; end the name with .csv" in err
    trained = TrainedModel.load(run)  # the library as well
    with pytest.raises(ConfigError, match=r"checkpoint.npz is a file of the run in"):
        trained.save(run / "checkpoint.npz")
    with pytest.raises(ConfigError, match=r"a model file is an .npz; end its name with .npz"):
        trained.save(tmp_path / "metrics.json")
    assert before == {f: (run / f).read_bytes() for f in before}


def test_a_model_file_called_checkpoint_npz_does_not_make_its_folder_a_run(capsys, tmp_path):
    """Only a lock or a checkpoint with training state makes a run folder: a model file
    saved as models/checkpoint.npz may be replaced (with --overwrite), and a plot called
    loss.png beside it is no run's either."""
    models = tmp_path / "models"
    argv = ["--dataset", "iris", "--hidden", "4", "--epochs", "1", "--device", "cpu",
            "--save", str(models / "checkpoint.npz"), "--quiet"]  # fmt: skip
    for n, extra in enumerate([[], ["--overwrite"]]):
        rc, _, err = _cli_call(capsys, train.main, train.FLAGS, *argv, "--out",
                               str(tmp_path / f"run{n}"), *extra)  # fmt: skip
        assert rc == 0, err
    rc, _, err = _cli_call(capsys, train.main, train.FLAGS, *argv, "--out", str(tmp_path / "r2"))
    assert rc == 2 and "already exists" in err and "(--overwrite)" in err
    (models / "loss.png").write_bytes(b"a plot")
    np.savetxt(tmp_path / "rows.csv", np.ones((3, 4)), delimiter=",")
    argv = [str(models / "checkpoint.npz"), "--data", str(tmp_path / "rows.csv"),
            "--out", str(models / "metrics.json"), "--device", "cpu"]  # fmt: skip
    assert _cli_call(capsys, predict.main, predict.FLAGS, *argv)[0] == 0


def test_one_hot_targets_are_classes_over_their_columns():
    y = np.eye(4)[[0, 2, 2, 1, 0]]  # class 3 never occurs, still one of the 4 outputs
    targets = resolve_targets(y)
    assert (targets.loss, targets.outputs) == ("cross_entropy", 4)
    np.testing.assert_array_equal(targets.y, [0, 2, 2, 1, 0])
    assert "one-hot over 4 classes" in targets.reason


def test_predict_checks_labels_when_quiet_too_and_takes_a_run_folder(capsys, tmp_path):
    path = _model_file(tmp_path)  # classes 1, 5, 6
    np.savetxt(tmp_path / "rows.csv", np.c_[np.ones((3, 2)), [1, 5, 7]], delimiter=",")
    argv = ["--data", str(tmp_path / "rows.csv"), "--device", "cpu", "--quiet"]
    rc, out, err = _cli_call(capsys, predict.main, predict.FLAGS, str(path), *argv)
    assert rc == 2 and out == "" and "label 7 is not one of" in err
    (tmp_path / "run").mkdir()
    path.rename(tmp_path / "run" / "checkpoint.npz")
    np.savetxt(tmp_path / "rows.csv", np.ones((3, 2)), delimiter=",")
    rc, out, err = _cli_call(capsys, predict.main, predict.FLAGS, str(tmp_path / "run"), *argv)
    assert rc == 0 and out.splitlines()[0] == "prediction" and len(out.splitlines()) == 4


def test_proba_of_a_regression_model_is_one_line(capsys, tmp_path):
    from model.mlp import MLP

    model = MLP((2, 1), loss="mse")
    params = {k: np.ones(s) for k, s in model.param_shapes().items()}
    path = TrainedModel(model, params, "float64").save(tmp_path / "reg.npz")
    np.savetxt(tmp_path / "rows.csv", np.ones((3, 2)), delimiter=",")
    rc, out, err = _cli_call(capsys, predict.main, predict.FLAGS, str(path), "--data",
                             str(tmp_path / "rows.csv"), "--proba", "--device", "cpu")  # fmt: skip
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "predicts values, not class probabilities (--proba)" in err


def test_the_confusion_matrix_keeps_its_columns_apart_for_large_counts():
    metrics = {"loss": 0.5, "accuracy": 0.5, "classes": [0, 1],
               "confusion": [[1234567, 2], [3, 7654321]]}  # fmt: skip
    rows = predict.format_metrics(metrics, 8888893).splitlines()[2:]
    assert [r.split() for r in rows] == [["0", "1"], ["0", "1234567", "2"], ["1", "3", "7654321"]]


def test_predict_and_export_read_each_array_of_the_model_once(capsys, tmp_path, monkeypatch):
    """Telling a sweep from one model, and export's "epoch E of N", read the file's meta
    entry alone: the parameters, however large, are read once per command."""
    path = _model_file(tmp_path)
    np.savetxt(tmp_path / "rows.csv", np.ones((3, 2)), delimiter=",")
    reads = collections.Counter()
    read = np.lib.npyio.NpzFile.__getitem__

    def counted(self, key):
        reads[key] += 1
        return read(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", counted)
    argv = ["--data", str(tmp_path / "rows.csv"), "--device", "cpu", "--quiet"]
    assert _cli_call(capsys, predict.main, predict.FLAGS, str(path), *argv)[0] == 0
    params = set(reads) - {"meta"}
    assert params == {"W1", "b1", "W2", "b2"} and all(reads[k] == 1 for k in params), reads
    reads.clear()
    argv = [str(path), "--out", str(tmp_path / "copy.npz"), "--quiet"]
    assert _cli_call(capsys, export.main, export.FLAGS, *argv)[0] == 0
    assert params == set(reads) - {"meta"} and all(reads[k] == 1 for k in params), reads


def test_load_takes_a_run_folder_and_save_refuses_an_empty_path_or_a_folder(tmp_path):
    """As the command line does: a run folder means its checkpoint.npz; and a path that
    cannot be a model file is one error naming it, not an OSError."""
    path = _model_file(tmp_path)
    (tmp_path / "run").mkdir()
    path.rename(tmp_path / "run" / "checkpoint.npz")
    trained = TrainedModel.load(tmp_path / "run")
    assert trained.labels.classes.tolist() == [1, 5, 6]
    with pytest.raises(ConfigError, match=r"^the save path is empty$"):
        trained.save("")
    with pytest.raises(ConfigError, match=r"run is a folder; give a file name$"):
        trained.save(tmp_path / "run")
