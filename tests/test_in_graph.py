"""The in-graph adaptive pairs (tf_dopri5, tf_bosh3): both directions, XLA, statistics,
failures, Keras and the latent ODE (their closed-form values and gradients are checked
with every method in tests/test_tfode_odeint.py)."""

import numpy as np
import pytest
import tensorflow as tf
from problems import BY_NAME

import solvers_bridge as sb
import tfode

PAIRS = ["tf_dopri5", "tf_bosh3"]
F64 = tf.float64


def tf_problem(problem):
    return problem.tf_variable_and_func()


# Values and gradients against the catalogue's closed forms: with every other method in
# tests/test_tfode_odeint.py::test_values_and_gradients_match_closed_form.


@pytest.mark.parametrize("direction", [1.0, -1.0], ids=["forward", "reverse"])
@pytest.mark.parametrize("method", PAIRS)
def test_dense_outputs_cost_no_steps_and_stay_within_tolerance(method, direction):
    """Many output times read off the steps' dense output: the evaluations are those of
    three outputs, the values within the tolerance of the closed form; landing on every
    output (interpolate=False) takes a step per output instead."""
    problem = BY_NAME["linear"]
    p, func = tf_problem(problem)
    y0 = tf.constant(problem.y0, F64)
    w = tf.constant(np.linspace(0.5, 1.5, problem.y0.size), F64)
    tol = 1e-8
    nfe, values, grads = {}, {}, {}
    for name, count, interpolate in (("few", 3, True), ("many", 201, True),
                                     ("landing", 201, False)):
        t = direction * np.linspace(0.0, 1.5, count)
        stats = tfode.SolveStats()
        with tf.GradientTape() as tape:
            ys = tfode.odeint(func, y0, t, method=method, rtol=tol, atol=tol, stats=stats,
                              options={"interpolate": interpolate})
            loss = tf.reduce_sum(ys[-1] * w)
        grads[name] = tape.gradient(loss, p).numpy()
        nfe[name] = int(stats.nfe_forward.numpy())
        exact = problem.exact(t, 0.0, problem.y0, problem.params)
        values[name] = np.max(np.abs(ys.numpy() - exact) / (tol + tol * np.abs(exact)))
    assert nfe["many"] == nfe["few"] < nfe["landing"]
    assert max(values.values()) < 50  # tolerance-normalised error
    # The last output is a step's own end either way: the same gradient as few outputs.
    np.testing.assert_allclose(grads["many"], grads["few"], rtol=1e-12)
    with pytest.raises(TypeError, match="interpolate must be True or False"):
        tfode.odeint(func, y0, [0.0, 1.0], method=method, options={"interpolate": "yes"})


@pytest.mark.parametrize("method", PAIRS)
def test_reverse_time_and_the_error_tracks_the_tolerance(method):
    problem = BY_NAME["linear"]
    _, func = tf_problem(problem)
    t = np.array([1.5, 0.7, 0.0])
    errors = []
    for tol in (1e-4, 1e-7, 1e-10):
        ys = tfode.odeint(func, tf.constant(problem.y0, F64), t, method=method, rtol=tol,
                          atol=tol).numpy()
        exact = problem.exact(t, t[0], problem.y0, problem.params)
        errors.append(np.max(np.abs(ys - exact) / (tol + tol * np.abs(exact))))
    assert max(errors) < 50  # tolerance-normalised error
    assert errors[-1] < 50 and np.isfinite(errors).all()


@pytest.mark.parametrize("method", PAIRS)
def test_xla_compiled_solve_and_gradient_agree_with_eager(method):
    """Under jit_compile=True the solve and (with a step budget given) its gradient are
    the eager ones; a gradient with the default budget, which XLA would preallocate
    stacks for, is refused with the fix, while the forward solve alone needs none."""
    problem = BY_NAME["riccati"]
    p, func = tf_problem(problem)
    y0, t = tf.constant(problem.y0, F64), tf.constant([0.0, 0.5, 1.0], F64)

    def run(options):
        with tf.GradientTape() as tape:
            ys = tfode.odeint(func, y0, t, method=method, rtol=1e-8, atol=1e-10,
                              options=options)
            loss = tf.reduce_sum(ys ** 2)
        return ys, tape.gradient(loss, p)

    ys, g = run({})
    ys_x, g_x = tf.function(lambda: run({"max_steps": 400}), jit_compile=True)()
    np.testing.assert_allclose(ys_x.numpy(), ys.numpy(), rtol=1e-12)
    np.testing.assert_allclose(g_x.numpy(), g.numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match=r"needs options=\{'max_steps': N\}.*drop jit_compile"):
        tf.function(lambda: run({}), jit_compile=True)()
    forward = tf.function(lambda: tfode.odeint(func, y0, t, method=method, rtol=1e-8,
                                               atol=1e-10), jit_compile=True)()
    np.testing.assert_allclose(forward.numpy(), ys.numpy(), rtol=1e-12)


def test_under_xla_the_step_budget_counts_every_step_of_the_solve():
    """Under XLA max_steps bounds the whole solve (rejected steps included), not each
    output interval: a budget that covers each interval but not their sum fails there,
    and passes outside XLA."""
    problem = BY_NAME["decay"]
    _, func = tf_problem(problem)
    y0, t = tf.constant(problem.y0, F64), tf.constant(np.linspace(0.0, 4.0, 9), F64)
    opts = {"interpolate": False}
    stats = tfode.SolveStats()
    tfode.odeint(func, y0, t, method="tf_dopri5", rtol=1e-10, atol=1e-10, options=opts,
                 stats=stats)
    steps = stats.as_dict()["steps_forward"]
    per_interval = -(-steps // (len(t) - 1)) + 3  # enough for the longest interval
    assert per_interval < steps
    opts["max_steps"] = per_interval
    for jit in (False, True):
        stats = tfode.SolveStats()
        ys = tf.function(lambda s=stats: tfode.odeint(func, y0, t, method="tf_dopri5",
                                                      rtol=1e-10, atol=1e-10, options=opts,
                                                      stats=s),
                         jit_compile=jit)()
        failed = stats.as_dict()["status_forward"] == 1
        assert failed == jit and np.isnan(ys.numpy()[-1]).all() == jit


def test_statistics_count_every_evaluation_and_the_backward_pass_when_taken():
    calls = tf.Variable(0, dtype=tf.int64)
    problem = BY_NAME["decay"]
    p = tf.Variable(problem.params, dtype=F64)

    def func(t, y):
        with tf.control_dependencies([calls.assign_add(1)]):  # one per evaluation
            return problem.tf_f(t, y, p)

    stats = tfode.SolveStats()
    with tf.GradientTape() as tape:
        ys = tfode.odeint(func, tf.constant(problem.y0, F64), [0.0, 1.0], method="tf_dopri5",
                          rtol=1e-8, atol=1e-10, stats=stats)
        loss = tf.reduce_sum(ys)
    d = stats.as_dict()
    assert d["nfe_forward"] == int(calls.numpy()) and d["steps_forward"] > 0
    assert d["nfe_backward"] == 0
    tape.gradient(loss, p)
    assert stats.as_dict()["nfe_backward"] == d["nfe_forward"]


def test_step_budget_fails_eagerly_and_leaves_nan_in_a_graph():
    func = lambda t, y: -1000.0 * y  # noqa: E731 - stiff: an explicit pair needs many steps
    y0 = tf.ones([2], F64)
    with pytest.raises(sb.SolverError, match="step budget was exhausted"):
        tfode.odeint(func, y0, [0.0, 1.0], method="tf_dopri5", options={"max_steps": 5})
    stats = tfode.SolveStats()
    ys = tf.function(lambda: tfode.odeint(func, y0, [0.0, 1.0], method="tf_dopri5",
                                          options={"max_steps": 5}, stats=stats))()
    assert np.isnan(ys.numpy()[-1]).all() and stats.as_dict()["status_forward"] == 1


def test_adjoint_and_unknown_options_are_refused():
    func = lambda t, y: -y  # noqa: E731
    with pytest.raises(ValueError, match="backpropagation through its steps"):
        tfode.odeint(func, tf.ones([2], F64), [0.0, 1.0], method="tf_dopri5",
                     adjoint="quadrature")
    with pytest.raises(ValueError, match="solves to output times only"):
        tfode.odeint_event(func, tf.ones([2], F64), 0.0, lambda t, y: y[0] - 0.5, t_max=2.0,
                           method="tf_dopri5")
    with pytest.raises(TypeError, match="Unknown option"):
        tfode.odeint(func, tf.ones([2], F64), [0.0, 1.0], method="tf_bosh3",
                     options={"lband": 1})


def test_float32_states_and_an_ode_block_train_with_the_fast_path():
    import keras

    from tfode.layers import ConcatMLP, ODEBlock

    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    y = (x[:, 0] * x[:, 1] > 0).astype("float32")
    block = ODEBlock(ConcatMLP((8,)), method="tf_dopri5", rtol=1e-4, atol=1e-4)
    model = keras.Sequential([keras.Input((2,)), block,
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert min(history.history["nfe_f"]) > 0 and min(history.history["nfe_b"]) > 0


def test_the_pairs_are_in_the_method_registry():
    methods = tfode.methods()
    for name in PAIRS:
        assert methods[name]["in_graph"] and methods[name]["operations"] == ["solve"]


def test_the_latent_ode_trains_through_the_fast_path_with_the_adjoints_gradients():
    import keras

    from experiments.latent_data import spirals, subsample
    from tfode.latent import LatentODE

    d = spirals(n_spirals=8, n_train=6, noise_std=0.3, seed=0)
    idx = subsample(8, 100, 10, seed=0)
    x = np.take_along_axis(d.noisy[:6, :100], idx[:6, :, None], 1)
    t = d.t[idx[:6]]  # irregular times: the solve's grid has no static length
    grads = {}
    for method in ("odeint", "tf_dopri5"):
        keras.utils.set_random_seed(0)
        model = LatentODE(obs_std=0.3, method=method, rtol=1e-9, atol=1e-9)

        @tf.function
        def loss_and_grads(model=model):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.elbo(x, t, seed=(0, 0)))
            return loss, tape.gradient(loss, model.trainable_variables)

        loss, g = loss_and_grads()
        grads[method] = (float(loss), np.concatenate([v.numpy().ravel() for v in g]))
    (la, ga), (lb, gb) = grads["odeint"], grads["tf_dopri5"]
    assert lb == pytest.approx(la, rel=1e-7)
    assert np.linalg.norm(gb - ga) <= 1e-5 * np.linalg.norm(ga)


def test_eager_solves_trace_their_loop_once_and_let_the_dynamics_go():
    import gc
    import weakref

    w = tf.Variable([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
    traced = []

    def func(t, y):
        traced.append(1)  # Python runs only while the loop is traced
        return y @ w

    y0, t = tf.ones([3, 2], F64), tf.constant([0.0, 1.0, 2.0], F64)
    first = tfode.odeint(func, y0, t, method="tf_dopri5", rtol=1e-8, atol=1e-8)
    calls = len(traced)
    with tf.GradientTape() as tape:
        again = tfode.odeint(func, y0, t, method="tf_dopri5", rtol=1e-8, atol=1e-8)
        loss = tf.reduce_sum(again)
    assert tape.gradient(loss, w) is not None
    np.testing.assert_allclose(again.numpy(), first.numpy(), rtol=1e-13)
    calls = len(traced)
    third = tfode.odeint(func, y0, t, method="tf_dopri5", rtol=1e-8, atol=1e-8)
    assert len(traced) == calls  # the cached loop, not a new trace
    np.testing.assert_array_equal(third.numpy(), first.numpy())
    other = tfode.odeint(func, y0, t, method="tf_dopri5", rtol=1e-6, atol=1e-6)
    assert len(traced) > calls and np.abs(other.numpy() - first.numpy()).max() < 1e-5
    ref = weakref.ref(func)
    del func
    gc.collect()
    assert ref() is None  # the cache holds the dynamics weakly


def test_xla_benchmark_gradients_match_the_plain_call(tmp_path):
    """The XLA benchmark's rows: every step budget gives the plain call's gradient."""
    from experiments import bench_xla

    rows = bench_xla.main(["--batch", "4", "--dim", "3", "--hidden", "5", "--factors", "2",
                           "--repeats", "2", "--out", str(tmp_path)])
    assert [r["compile"] for r in rows] == ["tf.function", "jit_compile=True"]
    assert rows[1]["max_steps"] >= 2 * rows[1]["steps"] > 0
    assert rows[1]["max_grad_rel_diff"] < 1e-10 and rows[1]["median_s"] > 0
    assert (tmp_path / "xla_default_threads.json").exists()
