"""tfode.layers: the Keras 3 layers, in fit, saved, reloaded, under mixed precision."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfode
from tfode.layers import NFE, ConcatConv2D, ConcatMLP, ConvODEFunc, NFELogger, ODEBlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xor_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype("float32")
    return x, (x[:, 0] * x[:, 1] > 0).astype("float32")


def classifier(block):
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(4), block,
                             keras.layers.Dense(1, activation="sigmoid")])


def test_nfe_is_reported_automatically_in_history_progress_and_csv(tmp_path, capsys):
    # No metric and no callback added: the block reports nfe_f and nfe_b itself.
    keras.utils.set_random_seed(1)
    x, y = xor_data()
    block = ODEBlock(ConcatMLP((16,)), name="ode")
    model = classifier(block)
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    logger = NFELogger(block)  # per-batch figures, the independent record
    csv_path = tmp_path / "log.csv"
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=1, validation_data=(x, y),
                        callbacks=[logger, keras.callbacks.CSVLogger(str(csv_path))])
    assert "nfe_f:" in capsys.readouterr().out
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"]
    # Each epoch's figures are the means of that epoch's per-batch passes.
    for epoch in range(4):
        rows = [b for b in logger.batches if b["epoch"] == epoch]
        assert history.history["nfe_f"][epoch] == pytest.approx(
            np.mean([b["nfe_forward"] for b in rows]))
        assert history.history["nfe_b"][epoch] == pytest.approx(
            np.mean([b["nfe_backward"] for b in rows]))
        assert history.history["nfe_b"][epoch] > 0
    # Evaluation and validation: their own forward NFE, no backward pass.
    assert after["nfe_b"] == 0.0 and after["nfe_f"] > 0
    assert set(history.history["val_nfe_b"]) == {0.0}
    assert min(history.history["val_nfe_f"]) > 0
    header = csv_path.read_text().splitlines()[0].split(",")
    nfe_columns = sorted(c for c in header if "nfe" in c)
    assert nfe_columns == ["nfe_b", "nfe_f", "val_nfe_b", "val_nfe_f"]


def test_two_blocks_report_under_their_own_names_and_the_report_can_be_off():
    x, y = xor_data(32)
    first = ODEBlock(ConcatMLP((8,)), nfe_name="nfe_first")
    second = ODEBlock(ConcatMLP((8,)), nfe_name="nfe_second")
    quiet = ODEBlock(ConcatMLP((8,)), nfe_name=None)
    model = keras.Sequential([keras.Input((2,)), first, second, quiet,
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert sorted(k for k in history.history if "nfe" in k) == [
        "nfe_first_b", "nfe_first_f", "nfe_second_b", "nfe_second_f"]


def test_an_explicit_nfe_metric_agrees_with_the_automatic_one():
    x, y = xor_data(32)
    block = ODEBlock(ConcatMLP((8,)))
    model = classifier(block)
    model.compile("adam", "binary_crossentropy", metrics=[NFE(block, "forward", name="f")])
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.history["f"] == history.history["nfe_f"]


def test_layer_gradients_match_finite_differences():
    keras.utils.set_random_seed(2)
    block = ODEBlock(ConcatMLP((6,), dtype="float64"), t=(0.0, 0.5, 1.0), rtol=1e-10,
                     atol=1e-10, return_sequences=True, dtype="float64")
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 2)))
    block(x)
    w = block.dynamics.trainable_variables[0]
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(block(x) ** 2)
    gx, gw = tape.gradient(loss, [x, w])

    def loss_at(xv=None, wv=None):
        if wv is not None:
            w.assign(wv)
        return float(tf.reduce_sum(block(tf.constant(xv if xv is not None else x.numpy())) ** 2))

    h, base = 1e-5, w.numpy().copy()
    fd_x = np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        e = np.zeros(x.shape)
        e[i] = h
        fd_x[i] = (loss_at(x.numpy() + e) - loss_at(x.numpy() - e)) / (2 * h)
    np.testing.assert_allclose(gx.numpy(), fd_x, rtol=1e-6, atol=1e-8)
    e = np.zeros_like(base)
    e[0, 0] = h
    fd_w = (loss_at(wv=base + e) - loss_at(wv=base - e)) / (2 * h)
    w.assign(base)
    assert gw.numpy()[0, 0] == pytest.approx(fd_w, rel=1e-6)


def test_output_shapes_sequences_and_augmentation():
    block = ODEBlock(ConcatMLP((8,)), t=(0.0, 0.5, 1.0), return_sequences=True, augment_dim=3)
    out = block(tf.ones((4, 2)))
    assert out.shape == (4, 3, 5) == block.compute_output_shape((4, 2))
    np.testing.assert_allclose(out[:, 0, :2].numpy(), 1.0)
    np.testing.assert_allclose(out[:, 0, 2:].numpy(), 0.0)  # the zero channels at t0
    assert ODEBlock(ConcatMLP(), augment_dim=1).compute_output_shape((None, 2)) == (None, 3)


def test_fixed_step_block_is_an_rk_net():
    dyn = ConcatMLP((8,))
    block = ODEBlock(dyn, method="rk4", options={"num_steps": 4})
    x = tf.ones((2, 2))
    out = block(x)
    ref = tfode.odeint(dyn, x, tf.constant([0.0, 1.0], tf.float64), method="rk4",
                       options={"num_steps": 4})[-1]
    np.testing.assert_allclose(out.numpy(), ref.numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(block(x))
    assert all(g is not None for g in tape.gradient(loss, dyn.trainable_variables))


def test_save_and_load_gives_identical_predictions(tmp_path):
    keras.utils.set_random_seed(3)
    x, _ = xor_data(8)
    block = ODEBlock(ConcatMLP((8,)), t=(0.0, 1.0), augment_dim=1, method="dopri5",
                     rtol=1e-5, atol=1e-6, adjoint=tfode.Backsolve(seminorm=True),
                     name="ode_saved")
    model = classifier(block)
    pred = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    # Equal to float32 round-off (each instance times XLA against plain TensorFlow for
    # its callbacks; a different choice changes the last bits, a wrong reload far more).
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pred, rtol=1e-6, atol=1e-7)
    cfg = loaded.layers[1].get_config()
    assert cfg["method"] == "dopri5" and cfg["augment_dim"] == 1
    assert loaded.layers[1].adjoint == tfode.Backsolve(seminorm=True)


def test_a_block_saved_with_the_old_adjoint_arguments_loads_with_them_as_an_object():
    config = ODEBlock(ConcatMLP((8,)), method="lsoda").get_config()
    config.update(adjoint="backsolve", adjoint_method="adams", adjoint_rtol=1e-7,
                  adjoint_atol=None, adjoint_options=None, restart=True, seminorm=True)
    block = ODEBlock.from_config(config)
    assert block.adjoint == tfode.Backsolve(method="adams", rtol=1e-7, seminorm=True)
    with pytest.raises(TypeError, match=r"ODEBlock\(\) no longer takes seminorm=.*Backsolve"):
        ODEBlock(ConcatMLP((8,)), seminorm=True)


def test_get_config_round_trip_of_every_layer():
    for layer in (ODEBlock(ConvODEFunc(8), t=(0.0, 2.0), method="lsoda"),
                  ConcatConv2D(4, 3), ConvODEFunc(16), ConcatMLP((5, 7), activation="relu")):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_jit_compile_true_falls_back_with_a_warning():
    x, y = xor_data(16)
    model = classifier(ODEBlock(ConcatMLP((4,))))
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile("adam", "binary_crossentropy", jit_compile=True)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.jit_compile is False


def test_savedmodel_export_gets_a_clear_message(tmp_path):
    model = classifier(ODEBlock(ConcatMLP((4,))))
    model(np.ones((1, 2), "float32"))
    with pytest.raises(RuntimeError,
                       match=r"cannot be exported as a TensorFlow SavedModel.*model\.keras"):
        model.export(str(tmp_path / "sm"))


def test_mixed_precision_keeps_ode_layers_float32():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        block = ODEBlock(ConcatMLP((8,)))
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), block,
                                  keras.layers.Dense(1)])
        out = model(np.ones((3, 2), "float32"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert block.compute_dtype == "float32"
    assert {sub.compute_dtype for sub in block.dynamics._flatten_layers()} == {"float32"}
    assert np.all(np.isfinite(out.numpy()))


def test_concat_conv_uses_time_as_a_channel():
    layer = ConcatConv2D(3, 3)
    x = tf.random.normal((2, 5, 5, 4))
    with pytest.raises(ValueError, match=r"build it|layer.build\(x.shape\) first"):
        layer(tf.constant(0.7), x)  # Keras would build it on the time's shape
    layer.build(x.shape)
    out = layer(tf.constant(0.7), x)
    manual = layer.conv(tf.concat([x, tf.fill((2, 5, 5, 1), 0.7)], -1))
    np.testing.assert_allclose(out.numpy(), manual.numpy(), rtol=1e-6)
    assert layer.conv.kernel.shape == (3, 3, 5, 3)


def test_conv_ode_func_matches_the_reference_parameter_count():
    func = ConvODEFunc(64)
    block = ODEBlock(func)
    block.build((None, 7, 7, 64))
    # Two 3x3 ConcatConv (65 -> 64, with bias) and three GroupNorms of 64 channels.
    expected = 2 * (3 * 3 * 65 * 64 + 64) + 3 * 2 * 64
    assert sum(int(np.prod(v.shape)) for v in block.trainable_variables) == expected == 75_392


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_ode_func_norms_equal_keras_group_normalization(dtype):
    """The ODE function's XLA-compiled norms against the Keras layers they stand for:
    GroupNorm, ReLU, conv, GroupNorm, ReLU, conv, GroupNorm; values and gradients with
    respect to the input and every weight, eager and inside a plain tf.function."""
    func = ConvODEFunc(8, dtype=dtype)
    func.build((None, 5, 5, 8))
    rng = np.random.default_rng(0)
    for v in func.weights:
        v.assign(rng.normal(size=v.shape) * 0.3)
    x = tf.constant(rng.normal(size=(3, 5, 5, 8)), dtype)
    t = tf.constant(0.4, dtype)

    def keras_side(x):
        out = func.conv1(t, tf.nn.relu(func.norm1(x)))
        out = func.conv2(t, tf.nn.relu(func.norm2(out)))
        return func.norm3(out)

    def value_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, *tape.gradient(loss, [x, *func.trainable_variables])]

    tol = 1e-4 if dtype == "float32" else 1e-10
    want = value_and_grads(keras_side)
    for got in (value_and_grads(lambda x: func(t, x)),
                tf.function(value_and_grads)(lambda x: func(t, x))):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=tol, atol=tol)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least a start and an end time"):
        ODEBlock(ConcatMLP(), t=(1.0,))
    with pytest.raises(TypeError, match="dynamics must be a Keras layer"):
        ODEBlock(3)
    with pytest.raises(ValueError, match="augment_dim must be >= 0"):
        ODEBlock(ConcatMLP(), augment_dim=-1)


def test_non_tensorflow_backend_is_refused_at_import():
    # Keras's other backends need JAX or PyTorch, absent here: stand one in.
    code = "import keras; keras.backend.backend = lambda: 'jax'; import tfode.layers"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "tfode.layers needs the TensorFlow backend of Keras" in proc.stderr
    assert "KERAS_BACKEND=tensorflow" in proc.stderr


def _script_env() -> dict:
    """The environment of a test script run by path: the checkout importable whether or
    not the package is installed (a script's own folder, not the root, is on its path)."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)


def test_mirrored_strategy_trains_to_the_same_weights():
    script = os.path.join(ROOT, "tests", "distributed_fit.py")
    env = _script_env()
    proc = subprocess.run([sys.executable, script, "mirrored"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPLICAS 2" in proc.stdout
    diff = float(proc.stdout.split("MAXDIFF")[1].split()[0])
    moved = float(proc.stdout.split("MOVED")[1].split()[0])
    assert moved > 1e-2  # training changed the weights ...
    assert diff < 1e-6  # ... identically with and without the strategy


def test_warnings_module_is_left_clean():
    # Building a block emits no warning of its own.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ODEBlock(ConcatMLP((4,)))(tf.ones((1, 2)))


def test_multi_worker_mirrored_strategy_on_loopback(tmp_path):
    """Two worker processes on loopback train to the weights of one process."""
    import socket

    script = os.path.join(ROOT, "tests", "distributed_fit.py")
    env = _script_env()
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            ports.append(str(sock.getsockname()[1]))
    workers = [subprocess.Popen([sys.executable, script, "worker", str(i), ",".join(ports),
                                 str(tmp_path / f"w{i}.npz")], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    try:
        outs = [w.communicate(timeout=600) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (out, err) in zip(workers, outs):
        assert w.returncode == 0, err[-3000:]
        assert "REPLICAS 2" in out
    plain = subprocess.run([sys.executable, script, "plain", str(tmp_path / "plain.npz")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    ref = np.load(tmp_path / "plain.npz")
    for i in range(2):
        got = np.load(tmp_path / f"w{i}.npz")
        names = [k for k in ref.files if k.startswith("arr_")]
        assert max(float(np.abs(ref[k] - got[k]).max()) for k in names) < 1e-6
    moved = np.concatenate([ref[k].ravel() for k in names]) - ref["start"]
    assert np.abs(moved).max() > 1e-2


def test_a_saved_model_loads_after_import_tfode_alone(tmp_path):
    keras.utils.set_random_seed(3)
    x, _ = xor_data(8)
    model = classifier(ODEBlock(ConcatMLP((8,))))
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", model.predict(x, verbose=0))
    code = (
        "import sys, numpy as np, keras, tfode\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"assert np.array_equal(m.predict(x, verbose=0), np.load({str(tmp_path / 'want.npy')!r}))\n"
        "print('loaded', type(m.layers[1]).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_script_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded ODEBlock" in proc.stdout
