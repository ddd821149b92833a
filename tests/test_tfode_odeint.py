"""tfode.odeint: values, gradients (finite differences, closed forms, autograd),
statistics, graph modes and bad input."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from problems import BY_NAME, CATALOGUE

import solvers_bridge as sb
import tfode

# SciPy's pure-Python RK23 and Radau take minutes at these tolerances through the
# TensorFlow callbacks; the bridge tests and the stiff and event tests cover them.
ADAPTIVE = sorted(m for m in sb.METHODS if m not in ("rk23", "radau"))
F64 = tf.float64


def tf_problem(problem):
    return problem.tf_variable_and_func()


# The SciPy methods through the adjoint, the in-graph pairs by backpropagation.
@pytest.mark.parametrize("method", ADAPTIVE + ["tf_dopri5", "tf_bosh3"])
@pytest.mark.parametrize("problem", CATALOGUE, ids=lambda p: p.name)
def test_values_and_gradients_match_closed_form(method, problem):
    p, func = tf_problem(problem)
    t = tf.constant([0.0, 0.4, 0.9, 1.5], F64)
    y0 = tf.constant(problem.y0, F64)
    w = np.random.default_rng(11).normal(size=(4, problem.y0.size))
    with tf.GradientTape() as tape:
        tape.watch([y0, t])
        ys = tfode.odeint(func, y0, t, method=method, rtol=1e-10, atol=1e-12)
        loss = tf.reduce_sum(w * ys)
    gy0, gt, gp = tape.gradient(loss, [y0, t, p])
    np.testing.assert_allclose(ys.numpy(), problem.exact(t.numpy(), 0.0, problem.y0,
                                                         problem.params), rtol=1e-7, atol=1e-9)
    ey0, ep, et = problem.loss_grads(t.numpy(), w)
    np.testing.assert_allclose(gy0.numpy(), ey0, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gp.numpy(), ep, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gt.numpy(), et, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("adjoint", ["backsolve", "quadrature", "interpolating"])
def test_times_without_a_gradient_cost_no_time_gradient_evaluations(adjoint, graph):
    """Times that no one differentiates (Python values, constants, stop_gradient,
    unwatched tensors) skip dL/dt's evaluation at each output time; the other
    gradients are bitwise those of a solve whose times are watched."""
    problem = CATALOGUE[0]
    p, func = tf_problem(problem)
    y0 = tf.constant(problem.y0, F64)
    times = [0.0, 0.4, 0.9, 1.5]
    w = np.random.default_rng(11).normal(size=(4, problem.y0.size))

    def run(t, watch):
        stats = tfode.SolveStats()

        def grads():
            with tf.GradientTape() as tape:
                tt = tf.constant(times, F64) if t is None else t
                if watch:
                    tape.watch(tt)
                ys = tfode.odeint(func, y0, tt, method="lsoda", rtol=1e-9, atol=1e-9,
                                  adjoint=adjoint, stats=stats)
                loss = tf.reduce_sum(w * ys)
            return tape.gradient(loss, [p, tt]) if watch else (tape.gradient(loss, p), None)

        gp, gt = (tf.function(grads) if graph else grads)()
        return gp.numpy(), gt, int(stats.nfe_backward.numpy())

    gp_ref, gt, nfe_ref = run(None, True)
    assert np.all(np.isfinite(gt.numpy()))
    for t in (times, tf.constant(times, F64), tf.stop_gradient(tf.constant(times, F64))):
        gp, _, nfe = run(t, False)
        np.testing.assert_array_equal(gp, gp_ref)
        # One evaluation per output time (backsolve: dL/dt(t0) comes from its state).
        assert nfe_ref - nfe == len(times) - (adjoint == "backsolve")


def make_mlp(seed=0, hidden=8, dtype=F64):
    rng = np.random.default_rng(seed)
    w1 = tf.Variable(rng.normal(0, 0.5, (2, hidden)), dtype=dtype)
    b1 = tf.Variable(rng.normal(0, 0.1, hidden), dtype=dtype)
    w2 = tf.Variable(rng.normal(0, 0.5, (hidden, 2)), dtype=dtype)

    def func(t, y):  # time-dependent, so dL/dt exercises df/dt
        return tf.matmul(tf.tanh(tf.matmul(y ** 3, w1) + b1 * tf.cos(t)), w2)

    return func, [w1, b1, w2]


Y0 = np.array([[1.5, 0.0], [0.3, -0.8], [-1.0, 0.4]])
T = np.array([0.0, 0.3, 0.8, 1.2])
WEIGHTS = np.random.default_rng(3).normal(size=(len(T),) + Y0.shape)


def mlp_loss(func, y0, t, method, **kw):
    ys = tfode.odeint(func, y0, t, method=method, **kw)
    return tf.reduce_sum(WEIGHTS * ys + 0.1 * ys ** 2)


def central_difference(fn, x, h):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (fn(x + e) - fn(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("method", ADAPTIVE)
def test_gradients_match_central_differences(method):
    func, params = make_mlp()
    y0, t = tf.constant(Y0, F64), tf.constant(T, F64)
    with tf.GradientTape() as tape:
        tape.watch([y0, t])
        loss = mlp_loss(func, y0, t, method, rtol=1e-10, atol=1e-10)
    grads = tape.gradient(loss, [y0, t, *params])

    tight = dict(rtol=1e-12, atol=1e-12)
    fd = lambda y, tt: float(mlp_loss(func, tf.constant(y), tf.constant(tt), method, **tight))
    np.testing.assert_allclose(grads[0], central_difference(lambda y: fd(y, T), Y0, 1e-4),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1], central_difference(lambda tt: fd(Y0, tt), T, 1e-4),
                               rtol=1e-5, atol=1e-6)
    for var, g in zip(params, grads[2:]):
        base = var.numpy()

        def at(v, var=var):
            var.assign(v)
            return fd(Y0, T)

        expected = central_difference(at, base, 1e-4)
        var.assign(base)
        np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_gradients_match_autograd_scipy_odeint():
    import autograd.numpy as anp
    from autograd import grad
    from autograd.builtins import tuple as ag_tuple
    from autograd.scipy.integrate import odeint as autograd_odeint

    func, params = make_mlp(seed=4)
    values = [v.numpy() for v in params]

    def f(y, t, w1, b1, w2):
        y = anp.reshape(y, Y0.shape)
        return anp.reshape(anp.dot(anp.tanh(anp.dot(y ** 3, w1) + b1 * anp.cos(t)), w2), (-1,))

    def ref_loss(y0, w1, b1, w2):
        ys = autograd_odeint(f, y0, T, ag_tuple((w1, b1, w2)), rtol=1e-10, atol=1e-10)
        ys = anp.reshape(ys, (len(T),) + Y0.shape)
        return anp.sum(WEIGHTS * ys + 0.1 * ys ** 2)

    ref = grad(ref_loss, argnum=(0, 1, 2, 3))(Y0.ravel(), *values)
    y0 = tf.constant(Y0, F64)
    with tf.GradientTape() as tape:
        tape.watch(y0)
        loss = mlp_loss(func, y0, tf.constant(T, F64), "odeint", rtol=1e-10, atol=1e-10)
    ours = tape.gradient(loss, [y0, *params])
    np.testing.assert_allclose(ours[0].numpy().ravel(), ref[0], rtol=1e-6)
    for a, b in zip(ours[1:], ref[1:]):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Fixed-step in-graph methods (RK-Net).


def numpy_rk(f, y0, t, method, steps):
    c, a, b = tfode._fixed.TABLEAUX[method]
    ys, y = [y0], y0
    for i in range(len(t) - 1):
        h = (t[i + 1] - t[i]) / steps
        for k in range(steps):
            s = t[i] + k * h
            ks = []
            for ci, ai in zip(c, a):
                ks.append(f(s + ci * h, y + h * sum(aij * kj for aij, kj in zip(ai, ks))))
            y = y + h * sum(bi * ki for bi, ki in zip(b, ks))
        ys.append(y)
    return np.stack(ys)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_step_values_against_numpy_and_convergence_order(method):
    problem = BY_NAME["time_dependent"]
    p, func = tf_problem(problem)
    t = np.array([0.0, 0.5, 1.0])
    ys = tfode.odeint(func, tf.constant(problem.y0), tf.constant(t), method=method,
                      options={"num_steps": 4})
    ref = numpy_rk(lambda s, y: problem.f(s, y, problem.params), problem.y0, t, method, 4)
    np.testing.assert_allclose(ys.numpy(), ref, rtol=1e-12)
    exact = problem.exact(t, 0.0, problem.y0, problem.params)
    errors = []
    for step in (0.1, 0.05):
        ys = tfode.odeint(func, tf.constant(problem.y0), tf.constant(t), method=method,
                          options={"step_size": step})
        errors.append(np.abs(ys.numpy()[-1] - exact[-1]).max())
    order = {"euler": 1, "midpoint": 2, "rk4": 4}[method]
    assert np.log2(errors[0] / errors[1]) == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_step_gradients_are_backprop_through_the_steps(method):
    func, params = make_mlp(seed=2)
    y0 = tf.constant(Y0, F64)
    with tf.GradientTape() as tape:
        tape.watch(y0)
        loss = mlp_loss(func, y0, tf.constant(T, F64), method, options={"num_steps": 3})
    g = tape.gradient(loss, [y0, *params])
    fd = central_difference(
        lambda y: float(mlp_loss(func, tf.constant(y), tf.constant(T, F64), method,
                                 options={"num_steps": 3})), Y0, 1e-5)
    np.testing.assert_allclose(g[0], fd, rtol=1e-7, atol=1e-8)
    assert all(gi is not None for gi in g[1:])


def test_rk4_gradients_equal_a_hand_unrolled_tape():
    func, params = make_mlp(seed=8)
    y0, t = tf.constant(Y0, F64), tf.constant(T, F64)
    with tf.GradientTape() as tape:
        tape.watch(y0)
        ours = tf.reduce_sum(tfode.odeint(func, y0, t, method="rk4",
                                          options={"num_steps": 2}) ** 2)
    g_ours = tape.gradient(ours, [y0, *params])
    with tf.GradientTape() as tape:  # classic RK4 written out by hand
        tape.watch(y0)
        y, outs = y0, [y0]
        for i in range(len(T) - 1):
            h = (t[i + 1] - t[i]) / 2
            for k in range(2):
                s = t[i] + k * h
                k1 = func(s, y)
                k2 = func(s + h / 2, y + h / 2 * k1)
                k3 = func(s + h / 2, y + h / 2 * k2)
                k4 = func(s + h, y + h * k3)
                y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            outs.append(y)
        ref = tf.reduce_sum(tf.stack(outs) ** 2)
    g_ref = tape.gradient(ref, [y0, *params])
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-13)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------------------
# Statistics, graph modes, variables.


@pytest.mark.parametrize("method", ADAPTIVE)
def test_statistics_equal_the_bridge_counts(method):
    problem = BY_NAME["linear"]
    p, func = tf_problem(problem)
    stats = tfode.SolveStats()
    t = tf.constant([0.0, 1.0, 2.0], F64)
    y0 = tf.constant(problem.y0, F64)
    with tf.GradientTape() as tape:
        tape.watch(y0)
        ys = tfode.odeint(func, y0, t, method=method, rtol=1e-8, atol=1e-10, stats=stats)
        loss = tf.reduce_sum(ys)
    tape.gradient(loss, [y0, p])
    # The same solve driven by the NumPy dynamics: identical counts.
    calls = []

    def f(s, y):
        calls.append(s)
        return problem.f(s, y, problem.params)

    _, info = sb.solve(f, problem.y0, t.numpy(), method, rtol=1e-8, atol=1e-10)
    values = stats.as_dict()
    assert values["nfe_forward"] == info.nfev == len(calls)
    assert values["steps_forward"] == info.nsteps
    assert values["status_forward"] == 0 and values["status_backward"] == 0
    assert values["nfe_backward"] == stats.backward_info.nfev > 0


def test_works_in_tf_function_with_statistics_as_variables():
    problem = BY_NAME["decay"]
    p, func = tf_problem(problem)
    stats = tfode.SolveStats()

    @tf.function
    def step(y0):
        with tf.GradientTape() as tape:
            tape.watch(y0)
            ys = tfode.odeint(func, y0, tf.constant([0.0, 1.0], F64), method="adams",
                              rtol=1e-10, atol=1e-12, stats=stats)
            loss = tf.reduce_sum(ys[-1])
        g = tape.gradient(loss, [y0, p])
        return g, stats.nfe_forward.read_value(), stats.nfe_backward.read_value()

    (gy0, gp), nfe_f, nfe_b = step(tf.constant(problem.y0, F64))
    k = problem.params[0]
    np.testing.assert_allclose(gy0.numpy(), [np.exp(-k)] * 2, rtol=1e-8)
    np.testing.assert_allclose(gp.numpy(), [-np.exp(-k) * problem.y0.sum()], rtol=1e-7)
    assert int(nfe_f) > 0 and int(nfe_b) > 0
    # Unknown batch size in the graph: shapes come from the runtime value.
    spec = tf.TensorSpec([None, 2], F64)
    fn = tf.function(lambda y: tfode.odeint(func, y, tf.constant([0.0, 1.0], F64)),
                     input_signature=[spec])
    out = fn(tf.ones([5, 2], F64))
    assert out.shape == (2, 5, 2)
    np.testing.assert_allclose(out[-1].numpy(), np.exp(-k), rtol=1e-6)


def test_persistent_tape_gives_repeatable_gradients():
    func, params = make_mlp(seed=5)
    y0 = tf.constant(Y0, F64)
    with tf.GradientTape(persistent=True) as tape:
        loss = mlp_loss(func, y0, tf.constant(T, F64), "adams")
    g1 = tape.gradient(loss, params)
    g2 = tape.gradient(loss, params)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_closure_keras_and_module_variables_all_get_gradients():
    import keras

    layer = keras.layers.Dense(2, activation="tanh", dtype="float64")
    layer.build((None, 2))
    scale = tf.Variable(0.5, dtype=F64)

    class Dyn(tf.Module):
        def __init__(self):
            self.bias = tf.Variable([0.1, -0.1], dtype=F64)

        def __call__(self, t, y):
            return scale * layer(y) + self.bias

    dyn = Dyn()
    y0 = tf.constant(Y0[:2], F64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tfode.odeint(dyn, y0, tf.constant([0.0, 1.0], F64)) ** 2)
    grads = tape.gradient(loss, [scale, dyn.bias, *layer.trainable_variables])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_explicit_variables_missing_one_warns():
    func, params = make_mlp(seed=6)
    with pytest.warns(UserWarning, match=r"not in variables=; they will get no gradient"):
        tfode.odeint(func, tf.constant(Y0, F64), tf.constant([0.0, 1.0], F64),
                     variables=params[:1])


def test_dynamics_traced_once_per_shape():
    traces = []
    v = tf.Variable(0.3, dtype=F64)

    def func(t, y):
        traces.append(1)
        return -v * y

    for _ in range(3):
        tfode.odeint(func, tf.ones([4], F64), tf.constant([0.0, 1.0], F64), method="adams")
    first = len(traces)
    for _ in range(3):
        tfode.odeint(func, tf.ones([4], F64), tf.constant([0.0, 2.0], F64), method="adams")
    assert len(traces) == first


def test_float32_dynamics_keep_dtype_and_warn_at_tight_tolerance():
    func, _ = make_mlp(dtype=tf.float32)
    y0 = tf.constant(Y0, tf.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = tfode.odeint(func, y0, tf.constant([0.0, 1.0]), rtol=1e-4, atol=1e-6)
    assert ys.dtype == tf.float32
    with pytest.warns(UserWarning, match=r"float32 dynamics with rtol=1e-08"):
        tfode.odeint(func, y0, tf.constant([0.0, 1.0]), rtol=1e-8, atol=1e-8)


def test_jacobian_autodiff_option_is_used_by_bdf():
    problem = BY_NAME["linear"]
    _, func = tf_problem(problem)
    stats = tfode.SolveStats()
    ys = tfode.odeint(func, tf.constant(problem.y0, F64), tf.constant([0.0, 1.0], F64),
                      method="bdf", rtol=1e-10, atol=1e-12, options={"jacobian": "autodiff"},
                      stats=stats)
    np.testing.assert_allclose(ys[-1], problem.exact([0.0, 1.0], 0.0, problem.y0,
                                                     problem.params)[-1], rtol=1e-7)
    assert stats.njev_forward.numpy() >= 1


# ---------------------------------------------------------------------------------------
# Bad input and failures.


def test_unknown_method_lists_all():
    with pytest.raises(ValueError, match=r"Unknown method 'rk99'.*euler.*rk4"):
        tfode.odeint(lambda t, y: -y, tf.ones([2], F64), [0.0, 1.0], method="rk99")


def test_unknown_option():
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['mxstep'\]"):
        tfode.odeint(lambda t, y: -y, tf.ones([2], F64), [0.0, 1.0], options={"mxstep": 3})
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['max_steps'\].*fixed-step"):
        tfode.odeint(lambda t, y: -y, tf.ones([2], F64), [0.0, 1.0], method="rk4",
                     options={"max_steps": 3})


@pytest.mark.parametrize("y0, match", [
    (tf.ones([2], tf.int32), "dtype int32"),
    (tf.ones([2], tf.float16), "dtype float16"),
])
def test_bad_state_dtype(y0, match):
    with pytest.raises(TypeError, match=match):
        tfode.odeint(lambda t, y: -y, y0, [0.0, 1.0])


def test_bad_times():
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        tfode.odeint(lambda t, y: -y, tf.ones([2], F64), [0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        tfode.odeint(lambda t, y: -y, tf.ones([2], F64), [[0.0, 1.0]])


def test_dynamics_with_wrong_shape():
    with pytest.raises(ValueError, match=r"returned a tensor of shape \(3,\) for a state of shape"):
        tfode.odeint(lambda t, y: tf.ones([3], F64), tf.ones([2], F64), [0.0, 1.0])


def test_dynamics_raising_at_run_time_keeps_its_type():
    def func(t, y):
        tf.debugging.assert_less(t, tf.constant(0.5, F64), message="t passed 0.5")
        return -y

    with pytest.raises(tf.errors.InvalidArgumentError, match="t passed 0.5") as info:
        tfode.odeint(func, tf.ones([2], F64), [0.0, 1.0], method="adams", jit_compile=False)
    assert any("'adams' solve" in note for note in info.value.__notes__)


def test_solver_failure_is_a_solver_error_eagerly_and_a_tf_error_in_graphs():
    func = lambda t, y: y * y  # blows up at t = 1
    with pytest.raises(sb.SolverError, match=r"The 'dopri5' solver failed at t=") as info:
        tfode.odeint(func, tf.ones([1], F64), [0.0, 0.5, 2.0], method="dopri5")
    assert info.value.ys.shape == (2, 1)
    with pytest.raises(tf.errors.OpError, match=r"SolverError.*The 'dopri5' solver failed"):
        tf.function(lambda: tfode.odeint(func, tf.ones([1], F64), [0.0, 0.5, 2.0],
                                         method="dopri5"))()


def test_nested_odeint_with_same_integrator_is_refused():
    def inner_uses_lsoda(t, y):
        return -tfode.odeint(lambda s, z: -z, y, [0.0, 1.0], method="odeint")[-1]

    with pytest.raises(sb.NestedSolveError, match="not reentrant"):
        tfode.odeint(inner_uses_lsoda, tf.ones([2], F64), [0.0, 1.0], method="lsoda")


def test_nested_odeint_with_another_integrator_works():
    def inner(t, y):
        return -tfode.odeint(lambda s, z: -z, y, tf.constant([0.0, 1.0], F64),
                             method="dopri5", rtol=1e-10, atol=1e-12)[-1]

    ys = tfode.odeint(inner, tf.ones([2], F64), [0.0, 1.0], method="lsoda", rtol=1e-10,
                      atol=1e-12)
    np.testing.assert_allclose(ys[-1].numpy(), np.exp(-np.exp(-1.0)), rtol=1e-7)


def test_fixed_step_statistics_count_stages_and_backward_only_with_a_gradient():
    v = tf.Variable(0.5, dtype=F64)
    stats = tfode.SolveStats()
    with tf.GradientTape() as tape:
        ys = tfode.odeint(lambda t, y: -v * y, tf.ones([2], F64), [0.0, 0.5, 1.0],
                          method="rk4", options={"num_steps": 3}, stats=stats)
        assert stats.as_dict()["nfe_forward"] == 4 * 3 * 2
        assert stats.as_dict()["nfe_backward"] == 0
        loss = tf.reduce_sum(ys)
    tape.gradient(loss, v)
    assert stats.as_dict()["nfe_backward"] == 24 and stats.as_dict()["steps_forward"] == 6


def test_the_backsolve_adjoint_picks_dopri5_for_many_short_intervals_and_stays_right():
    """A decay observed at 60 close times: the forward LSODA takes far fewer steps than
    intervals, so the backward pass runs on DOPRI5; its gradient is the closed form's."""
    k = tf.Variable(0.7, dtype=tf.float64)
    t = np.linspace(0.0, 2.0, 60)
    stats = tfode.SolveStats()
    with tf.GradientTape() as tape:
        ys = tfode.odeint(lambda s, y: -k * y, tf.constant([1.5], tf.float64), t,
                          method="odeint", rtol=1e-10, atol=1e-10, stats=stats)
        loss = tf.reduce_sum(ys)
    grad = float(tape.gradient(loss, k))
    assert stats.backward_info.method == "dopri5"
    np.testing.assert_allclose(grad, np.sum(-1.5 * t * np.exp(-0.7 * t)), rtol=1e-8)


def test_lsoda_work_arrays_pooled_across_tensorflow_callback_threads(monkeypatch):
    """SciPy's LSODA wrapper keeps a reference to its work arrays on every call; the
    bridge pools them per thread. TensorFlow runs a graph's numpy_function callbacks
    with a fresh Python thread state each time, so the pool must outlive it: over
    repeated training steps no thread allocates a work array of one size twice (else
    every solve leaks them). A thread of TensorFlow's pool may run its first callback
    late, so allocations are counted per thread."""
    import threading

    from solvers_bridge import _scipy_internals as sx

    w = tf.Variable([[-0.5, 1.0], [-1.0, -0.5]], dtype=tf.float64)
    y0 = tf.constant([[1.0, 0.0], [0.0, 1.0]], tf.float64)
    t = tf.constant(np.linspace(0.0, 1.0, 5))
    made = []
    original = np.empty_like

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tfode.odeint(lambda s, y: tf.matmul(y, w), y0, t,
                                              method="lsoda") ** 2)
        return tape.gradient(loss, w)

    def counted(like):
        made.append((threading.get_ident(), like.dtype.str, like.size))
        return original(like)

    monkeypatch.setattr(sx.np, "empty_like", counted)
    for _ in range(10):
        step()
    monkeypatch.undo()
    assert made, "the solves allocated no pooled work arrays at all"
    assert len(made) == len(set(made)), made


def test_float64_converter_builds_what_tf_constant_builds():
    """The callbacks' conversion (TensorFlow's eager-tensor constructor, called
    directly) gives the tensor ``tf.constant`` gives, for arrays and numbers alike;
    a release that moves the constructor makes it fall back, and fails here first."""
    from tfode._tf_internals import float64_converter

    convert = float64_converter()
    assert convert.__name__ == "convert", "the public fallback is in use"
    rng = np.random.default_rng(0)
    for value in (0.25, rng.standard_normal(7), rng.standard_normal(3200)):
        got, want = convert(value), tf.constant(value, tf.float64)
        assert got.dtype == tf.float64 and got.device == want.device
        np.testing.assert_array_equal(got.numpy(), want.numpy())
