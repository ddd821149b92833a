"""tfode.odeint as a new user meets it: precision of the times given, Jacobian and
step options, tolerances, empty and 16-bit states, assertions inside the dynamics,
the first messages on a mistake, warnings, and bitwise determinism."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

import tfode

F64 = tf.float64
A = np.array([[-0.5, 1.0], [-1.0, -0.5]])


def linear(dtype=F64):
    w = tf.Variable(A.T, dtype=dtype)
    return w, (lambda t, y: tf.matmul(y, w))


def exact(y0, t):
    return np.stack([y0 @ scipy.linalg.expm(A * (s - t[0])).T for s in t])


def test_python_times_keep_their_float64_precision():
    _, func = linear()
    y0 = tf.constant([[1.0, 0.0]], F64)
    t = [0.0, 0.1, 1.0 / 3.0]  # neither 0.1 nor 1/3 is a float32
    ys = tfode.odeint(func, y0, t, rtol=1e-12, atol=1e-12)
    ref = tfode.odeint(func, y0, tf.constant(t, F64), rtol=1e-12, atol=1e-12)
    assert np.array_equal(ys.numpy(), ref.numpy())
    np.testing.assert_allclose(ys.numpy()[:, 0], exact(np.array([1.0, 0.0]), np.array(t)),
                               rtol=1e-9, atol=1e-12)
    # odeint_event's t0 likewise: a Python 0.1 is the float64 0.1.
    event = lambda t, y: y[0, 0] - 0.5  # noqa: E731
    t_a, _ = tfode.odeint_event(func, y0, 0.1, event, t_max=5.0, rtol=1e-10, atol=1e-12)
    t_b, _ = tfode.odeint_event(func, y0, tf.constant(0.1, F64), event, t_max=5.0,
                                rtol=1e-10, atol=1e-12)
    assert t_a.numpy() == t_b.numpy()


JACOBIANS = [None, "autodiff", "banded"]
BANDS = [{}, {"lband": 1, "uband": 1}]


@pytest.mark.parametrize("band", BANDS, ids=["no-band", "band"])
@pytest.mark.parametrize("jacobian", JACOBIANS)
@pytest.mark.parametrize("method", ["lsoda", "odeint", "bdf", "radau", "adams", "dopri5"])
def test_every_jacobian_option_combination_works_or_is_refused_up_front(method, jacobian,
                                                                       band):
    # A batch of three independent 2-d samples: the Jacobian is block diagonal with a
    # band of 1 below and above, so every accepted combination must give the solution.
    _, func = linear()
    y0 = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])
    t = np.array([0.0, 0.5, 1.0])
    options = dict(band, **({} if jacobian is None else {"jacobian": jacobian}))
    cls = tfode.methods()[method]
    takes_jac = jacobian is None or cls["jacobians"]
    takes_band = not band or "lband" in cls["options"]
    refused = (not takes_jac or not takes_band or (jacobian and band))
    if refused:
        with pytest.raises((ValueError, TypeError)) as err:
            tfode.odeint(func, tf.constant(y0), t, method=method, options=options)
        assert any(word in str(err.value) for word in ("jacobian", "Jacobian", "lband"))
        return
    ys = tfode.odeint(func, tf.constant(y0), t, method=method, rtol=1e-9, atol=1e-11,
                      options=options).numpy()
    for k in range(3):
        np.testing.assert_allclose(ys[:, k], exact(y0[k], t), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["lsoda", "adams", "bdf", "odeint", "dopri5"])
def test_step_options_work_on_reverse_time_solves(method):
    _, func = linear()
    y0 = np.array([1.0, 0.0])
    t = np.array([1.0, 0.5, 0.0])
    ys = tfode.odeint(func, tf.constant(y0[None]), t, method=method, rtol=1e-9, atol=1e-11,
                      options={"first_step": 0.01, "max_step": 0.2}).numpy()[:, 0]
    np.testing.assert_allclose(ys, exact(y0, t), rtol=1e-6, atol=1e-8)


def test_zero_tolerances_are_refused_when_the_graph_is_built():
    _, func = linear()

    @tf.function
    def solve():
        return tfode.odeint(func, tf.ones([1, 2], F64), [0.0, 1.0], rtol=0.0, atol=0.0)

    with pytest.raises(ValueError, match="rtol and atol are both zero"):
        solve()
    with pytest.raises(ValueError, match="rtol and atol are both zero"):
        tfode.odeint(func, tf.ones([1, 2], F64), [0.0, 1.0],
                     adjoint=tfode.Backsolve(rtol=0.0, atol=0.0))


def test_options_of_the_wrong_type_are_refused_naming_them():
    _, func = linear()
    with pytest.raises(TypeError, match="first_step must be a positive number; got '0.1'"):
        tfode.odeint(func, tf.ones([1, 2], F64), [0.0, 1.0], options={"first_step": "0.1"})


@pytest.mark.parametrize("adjoint", ["backsolve", "quadrature", "interpolating"])
@pytest.mark.parametrize("method", ["lsoda", "dopri5", "bdf", "rk45"])
def test_an_empty_state_gives_an_empty_result_and_zero_gradients(method, adjoint):
    w, func = linear()
    with tf.GradientTape() as tape:
        ys = tfode.odeint(func, tf.zeros([0, 2], F64), [0.0, 0.5, 1.0], method=method,
                          adjoint=adjoint)
        loss = tf.reduce_sum(ys)
    assert ys.shape == (3, 0, 2)
    assert np.array_equal(tape.gradient(loss, w).numpy(), np.zeros((2, 2)))


def test_sixteen_bit_dynamics_are_refused():
    w = tf.Variable(A.T, dtype=tf.float16)
    func = lambda t, y: tf.matmul(tf.cast(y, tf.float16), w)  # noqa: E731
    with pytest.raises(TypeError, match="returned float16 for a float64 state"):
        tfode.odeint(func, tf.ones([1, 2], F64), [0.0, 1.0])


def test_vector_event_function_gets_a_clear_error():
    _, func = linear()
    with pytest.raises(ValueError, match="event_fn returned a tensor of shape"):
        tfode.odeint_event(func, tf.ones([1, 2], F64), 0.0, lambda t, y: y[0] - 0.5,
                           t_max=2.0)


def test_assertions_in_the_dynamics_fire_under_the_default_jit_compile():
    _, linear_func = linear()

    def func(t, y):
        tf.debugging.assert_less(tf.reduce_max(tf.abs(y)), tf.constant(3.0, F64),
                                 message="state left the box")
        return -linear_func(t, y)  # grows: the assertion must stop it

    with pytest.raises(tf.errors.InvalidArgumentError, match="state left the box"):
        tfode.odeint(func, tf.ones([1, 2], F64), [0.0, 5.0])
    cb = tfode.numpy_callbacks(func, (1, 2))
    assert not cb.jit and "assertions" in cb.jit_reason
    with pytest.warns(UserWarning, match="XLA drops the tf.debugging assertions"):
        tfode.numpy_callbacks(func, (1, 2), jit_compile=True)


def _notes(exc) -> str:
    return " ".join(getattr(exc, "__notes__", []))


def test_a_float32_y0_against_float64_weights_gets_a_note_on_the_dtype():
    _, func = linear()
    with pytest.raises(Exception) as err:
        tfode.odeint(func, [[1.0, 2.0]], [0.0, 1.0])  # a Python list: float32
    notes = _notes(err.value)
    assert "y0's dtype, float32" in notes and "Python list" in notes
    assert "tf.constant(y0, tf.float64)" in notes


def test_dynamics_in_the_wrong_convention_get_a_note_naming_func_t_y():
    import keras

    w, _ = linear()
    with pytest.raises(Exception) as err:
        tfode.odeint(lambda y, t: tf.matmul(y, w), tf.ones([1, 2], F64), [0.0, 1.0])
    assert "func(t, y), t a scalar float64 tensor" in _notes(err.value)
    block = tfode.layers.ODEBlock(keras.layers.Dense(2))
    with pytest.raises(Exception) as err:
        block(tf.ones([1, 2]))
    assert "lambda t, y: layer(y)" in str(err.value)  # Keras drops notes; in the message


def test_float32_warns_only_at_a_tolerance_the_user_chose_and_at_the_users_line():
    _, func = linear(tf.float32)
    y0 = tf.ones([1, 2], tf.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tfode.odeint(func, y0, [0.0, 1.0])  # float32 defaults: no warning
    with pytest.warns(UserWarning, match="float32 dynamics with rtol=1e-07") as record:
        tfode.odeint(func, y0, [0.0, 1.0], rtol=1e-7)
    assert record[0].filename == __file__


DETERMINISM = textwrap.dedent("""
    import hashlib, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras, numpy as np, tensorflow as tf
    import tfode
    from tfode.layers import ConcatMLP, ODEBlock
    # Unrelated variables first, as many as the argument says: the model's variables
    # then sit at other addresses.
    junk = [tf.Variable(1.0) for _ in range(int(sys.argv[1]))]
    h = hashlib.sha256()
    for method in ("lsoda", "adams", "dopri5"):
        keras.utils.set_random_seed(0)
        block = ODEBlock(ConcatMLP((16, 16)), method=method, rtol=1e-5, atol=1e-5)
        x = tf.constant(np.random.default_rng(0).normal(size=(8, 3)), tf.float32)
        block(x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(block(x) ** 2)
        for g in tape.gradient(loss, block.trainable_variables):
            h.update(g.numpy().tobytes())
    print(h.hexdigest())
""")


def test_same_model_inputs_and_seeds_give_bitwise_equal_gradients_in_any_process(tmp_path):
    script = tmp_path / "grad.py"
    script.write_text(DETERMINISM)
    env = dict(os.environ, PYTHONHASHSEED="random")
    digests = {subprocess.run([sys.executable, str(script), str(junk)],
                              capture_output=True, text=True, check=True, env=env,
                              cwd=os.path.dirname(os.path.dirname(__file__))
                              ).stdout.split()[-1]
               for junk in (0, 37)}
    assert len(digests) == 1


def test_variables_are_listed_in_the_order_the_dynamics_read_them():
    import keras

    for junk_count in (0, 3, 11):
        _ = [tf.Variable(1.0) for _ in range(junk_count)]
        model = keras.Sequential([keras.layers.Dense(4, activation="tanh"),
                                  keras.layers.Dense(2)])
        model.build((None, 2))
        cb = tfode.numpy_callbacks(lambda t, y, m=model: m(y), (3, 2), tf.float32)
        read = [v.name.split(":")[0] for v in cb._variables]
        assert read == [v.path for v in model.trainable_variables]


def test_warnings_reach_code_without_a_source_file():
    """``python -c`` code has no file to show a line of: the warning is still shown and
    the solve still runs (the source lookup used to raise ImportError from the solve)."""
    code = ("import tensorflow as tf, tfode\n"
            "ys = tfode.odeint(lambda t, y: -y, tf.constant([1.0]), tf.constant([0.0, 1.0]),"
            " rtol=1e-9, atol=1e-9)\n"
            "print(float(ys[-1, 0]))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=root),
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) == pytest.approx(np.exp(-1.0), rel=1e-6)
    assert "<string>:2: UserWarning: float32 dynamics with rtol=1e-09" in done.stderr
