"""Thread settings: the solver's callbacks run inside ``tf.numpy_function`` and call
compiled TensorFlow functions from there; with one inter-op thread that nested call
must not wait for the thread its caller holds. Each setting runs in a fresh process
(threads are fixed at TensorFlow's start) under a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The thread settings from argv (intra-op, inter-op; 0 leaves TensorFlow's default), then
# one linear problem, before each script's training.
PROLOGUE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    intra, inter = int(sys.argv[1]), int(sys.argv[2])
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    import keras
    import numpy as np
    import tfode
    from experiments._common import fit

    keras.utils.set_random_seed(0)
    w = tf.Variable([[-0.5, 1.0], [-1.0, -0.5]], dtype=tf.float64)
    y0 = tf.constant([[1.0, 0.0], [0.5, 0.5]], tf.float64)
    t = tf.constant([0.0, 0.5, 1.0], tf.float64)
""")

# A gradient of odeint inside tf.function (the experiments' training loop), then Keras
# model.fit through an ODEBlock (the adjoint inside Keras's train function).
SCRIPT = PROLOGUE + textwrap.dedent("""
    def loss_fn(_):
        ys = tfode.odeint(lambda t, y: y @ w, y0, t, method="odeint", rtol=1e-9, atol=1e-9)
        return tf.reduce_sum(ys ** 2)

    history = fit(loss_fn, [w], keras.optimizers.SGD(0.01), 3, "threads")
    block = tfode.layers.ODEBlock(tfode.layers.ConcatMLP((8,)), method="adams", rtol=1e-6,
                                  atol=1e-6)
    model = keras.Sequential([keras.Input((3,)), block, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = np.linspace(-1.0, 1.0, 24).reshape(8, 3).astype("float32")
    fitted = model.fit(x, np.ones((8, 1), "float32"), epochs=2, batch_size=4, verbose=0)
    print(json.dumps({"losses": [h["loss"] for h in history],
                      "w": w.numpy().ravel().tolist(), "keras": fitted.history["loss"]}))
""")


# Dynamics that run without XLA (as the CNF's do): called from inside the solve's
# tf.numpy_function, they need a second inter-op thread.
SCRIPT_NO_XLA = PROLOGUE + textwrap.dedent("""
    def loss_fn(_):
        ys = tfode.odeint(lambda t, y: tf.tanh(y @ w), y0, t, method="adams", rtol=1e-8,
                          atol=1e-8, jit_compile=False)
        return tf.reduce_sum(ys ** 2)

    history = fit(loss_fn, [w], keras.optimizers.SGD(0.01), 3, "threads")
    print(json.dumps({"losses": [h["loss"] for h in history], "w": w.numpy().ravel().tolist(),
                      "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}))
""")


def _one_cpu():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _process(script: str, *argv, one_cpu: bool = False,
             env_threads: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    for name in ("TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env.pop(name, None)
    if env_threads is not None:
        env["TF_NUM_INTEROP_THREADS"] = env_threads
    try:
        return subprocess.run([sys.executable, "-c", script, *map(str, argv)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=240,
                              preexec_fn=_one_cpu if one_cpu else None)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Training hung (arguments {argv}, one CPU: {one_cpu}).")


def _result(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run(intra: int, inter: int) -> dict:
    return _result(_process(SCRIPT, intra, inter))


@pytest.fixture(scope="module")
def default_threads():
    return _run(0, 0)


def test_training_finishes_with_one_inter_op_thread(default_threads):
    """One intra-op and one inter-op thread: the tightest setting (two intra-op threads
    with one inter-op thread were checked to finish the same way)."""
    got = _run(1, 1)
    # The same steps as under TensorFlow's default threads (to rounding: reductions
    # may split differently over other thread counts).
    assert got["losses"] == pytest.approx(default_threads["losses"], rel=1e-9)
    assert got["w"] == pytest.approx(default_threads["w"], rel=1e-9)
    assert got["keras"] == pytest.approx(default_threads["keras"], rel=1e-4)


needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                    reason="needs os.sched_setaffinity (Linux)")


@needs_affinity
def test_a_one_cpu_process_gets_a_second_inter_op_thread_and_trains_as_elsewhere():
    """On one CPU TensorFlow's default inter-op pool has one thread, which the solve
    inside the graph holds while its non-XLA dynamics wait for one: ``import tfode``
    sets two. The steps are those of a process with all CPUs."""
    pinned = _result(_process(SCRIPT_NO_XLA, 0, 0, one_cpu=True))
    free = _result(_process(SCRIPT_NO_XLA, 0, 0))
    assert pinned["inter_op"] == 2
    assert pinned["losses"] == pytest.approx(free["losses"], rel=1e-9)
    assert pinned["w"] == pytest.approx(free["w"], rel=1e-9)
    assert pinned["losses"][-1] < pinned["losses"][0]


@pytest.mark.parametrize("how", ["config", "environment"])
def test_one_inter_op_thread_set_by_the_user_and_no_xla_is_a_clear_error_not_a_hang(how):
    if how == "config":
        done = _process(SCRIPT_NO_XLA, 0, 1)
    else:
        done = _process(SCRIPT_NO_XLA, 0, 0, env_threads="1")
    assert done.returncode != 0
    assert "ThreadPoolError" in done.stderr
    assert "set_inter_op_parallelism_threads(2)" in done.stderr
    assert "jit_compile=True" in done.stderr


def test_tf_started_sees_the_runtime_start():
    """The private interface behind the one-CPU setting: in this process TensorFlow has
    run ops, so it has started (a fresh process that has not is covered above, where
    ``import tfode`` could still set two threads)."""
    import tensorflow as tf

    from tfode._tf_internals import tf_started

    tf.constant(1.0) + 1.0
    assert tf_started()


def test_the_jacobian_callback_with_one_inter_op_thread_is_a_clear_error_not_a_hang():
    """XLA never compiles the Jacobian callback, so even XLA dynamics cannot help it."""
    script = textwrap.dedent("""
        import tensorflow as tf
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import tfode
        w = tf.Variable([[-50.0, 1.0], [-1.0, -0.5]], dtype=tf.float64)
        y0 = tf.constant([[1.0, 0.0]], tf.float64)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                ys = tfode.odeint(lambda t, y: y @ w, y0, tf.constant([0.0, 1.0], tf.float64),
                                  method="bdf", options={"jacobian": "autodiff"},
                                  jit_compile=True)
                loss = tf.reduce_sum(ys ** 2)
            return tape.gradient(loss, w)

        step()
    """)
    done = _process(script)
    assert done.returncode != 0
    assert "ThreadPoolError" in done.stderr and "Jacobian callbacks" in done.stderr
    assert "jit_compile=True so that" not in done.stderr
