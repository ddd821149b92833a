"""The quadrature adjoint: right gradients through stiff dynamics, against closed forms
and against backpropagation through a fine RK4 solve (issue 8's stiff MLP)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import solvers_bridge as sb
import tfode

STIFF_METHODS = ("bdf", "lsoda", "radau")


def _decay(k):
    """dy/dt = -k y with theta = k: ``(fun, vjp)`` for the bridge."""
    def fun(s, y):
        return -k * y

    def vjp(s, y, a):
        return np.concatenate([-k * y, -k * a, [0.0], -a * y])

    return fun, vjp


@pytest.mark.parametrize("method", STIFF_METHODS)
def test_bridge_quadrature_adjoint_matches_the_closed_form_of_a_stiff_decay(method):
    # dy/dt = -k y (k = 1000 on one component, 1 on the other), theta = (k1, k2):
    # y_i = y0 exp(-k t_i), L = sum_i sum y_i^2.
    k = np.array([1000.0, 1.0])
    y0 = np.array([1.5, -0.7])
    t = np.array([0.0, 0.001, 0.01, 0.5, 2.0])
    fun, vjp = _decay(k)

    fwd = sb.dense_solve(fun, y0, t, method, 1e-8, 1e-10, jac=lambda s, y: -np.diag(k))
    ys = y0 * np.exp(-np.outer(t, k))
    np.testing.assert_allclose(fwd.ys, ys, rtol=1e-5, atol=1e-9)
    res = sb.quadrature_adjoint(vjp, t, fwd, 2 * fwd.ys, 2, method=method, rtol=1e-8,
                                atol=1e-10, jac=lambda s, y: -np.diag(k), fun=fun)
    want_y0 = np.sum(2 * ys * np.exp(-np.outer(t, k)), 0)
    want_k = np.sum(2 * ys * (-t[:, None] * ys), 0)
    want_t = np.sum(2 * ys * (-k * ys), 1)
    want_t[0] = -np.dot(want_y0 - 2 * ys[0], -k * y0)
    np.testing.assert_allclose(res.grad_y0, want_y0, rtol=1e-5)
    np.testing.assert_allclose(res.grad_params, want_k, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(res.grad_t, want_t, rtol=1e-5, atol=1e-6)
    assert res.info.nfev > 0 and res.info.nintervals == 4


def test_dense_solution_interpolates_between_output_times():
    fwd = sb.dense_solve(lambda s, y: -y, [1.0], [0.0, 2.0], "bdf", 1e-9, 1e-12)
    s = np.linspace(0, 2, 9)
    np.testing.assert_allclose(fwd.sol(s)[0], np.exp(-s), rtol=1e-6)


@pytest.fixture(scope="module")
def stiff():
    from experiments.problems import rk4_reference, stiff_problem

    func, y0, t = stiff_problem()
    _, ref = rk4_reference(func, y0, t)
    return func, y0, t, ref


def _gradients(func, y0, t, **kwargs):
    stats = tfode.SolveStats()
    with tf.GradientTape() as tape:
        tape.watch(y0)
        loss = tf.reduce_sum(tfode.odeint(func, y0, t, stats=stats, **kwargs) ** 2)
    return [g.numpy() for g in tape.gradient(loss, [y0, *func.trainable_variables])], stats


def _error(grads, ref):
    got = np.concatenate([g.ravel() for g in grads])
    want = np.concatenate([g.ravel() for g in ref])
    return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.mark.parametrize("method", ["bdf", "lsoda"])
def test_quadrature_adjoint_gets_the_stiff_mlp_gradient_to_1e5(stiff, method):
    func, y0, t, ref = stiff
    grads, stats = _gradients(func, y0, t, method=method, rtol=1e-6, atol=1e-6,
                              adjoint="quadrature", options={"jacobian": "autodiff"})
    assert _error(grads, ref) < 1e-5
    s = stats.as_dict()
    assert s["njev_backward"] > 0 and s["nfe_backward"] > 0
    # Every gradient component, not only the norm: y0 and the output layer's bias.
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())


@pytest.mark.parametrize("adjoint,method,options", [
    ("interpolating", "radau", {}),
    ("interpolating", "lsoda", {}),
    ("checkpointed", "radau", {"jacobian": "autodiff"}),
    # VODE's BDF restarts at every checkpoint: its backward pass at a ten times tighter
    # tolerance gives what SciPy's Python BDF gave at the forward one.
    (tfode.Checkpointed(checkpoints=7, rtol=1e-7, atol=1e-7), "bdf", {"jacobian": "autodiff"}),
])
def test_interpolating_and_checkpointed_adjoints_get_the_stiff_mlp_gradient(stiff, adjoint,
                                                                            method, options):
    func, y0, t, ref = stiff
    grads, stats = _gradients(func, y0, t, method=method, rtol=1e-6, atol=1e-6,
                              adjoint=adjoint, options=options)
    assert _error(grads, ref) < 1e-5
    assert stats.as_dict()["nfe_backward"] > 0


def test_bridge_checkpointed_and_interpolating_match_the_quadrature_adjoint():
    k = np.array([1000.0, 1.0])
    y0 = np.array([1.5, -0.7])
    t = np.array([0.0, 0.01, 0.5, 2.0])
    fun, vjp = _decay(k)

    fwd = sb.dense_solve(fun, y0, t, "radau", 1e-9, 1e-11)
    want = sb.quadrature_adjoint(vjp, t, fwd, 2 * fwd.ys, 2, method="radau", rtol=1e-9,
                                 atol=1e-11)
    inter = sb.interpolating_adjoint(vjp, t, fwd, 2 * fwd.ys, 2, method="radau", rtol=1e-9,
                                     atol=1e-11)
    grid, index = sb.checkpoint_grid(t, 5)
    assert grid.size == 9 and np.array_equal(grid[index], t)
    ys_grid = sb.dense_solve(fun, y0, grid, "radau", 1e-9, 1e-11).ys
    grad_grid = np.zeros_like(ys_grid)
    grad_grid[index] = 2 * ys_grid[index]
    ckpt = sb.checkpointed_adjoint(fun, vjp, grid, ys_grid, grad_grid, 2, method="radau",
                                   rtol=1e-9, atol=1e-11)
    for res in (inter, ckpt):
        np.testing.assert_allclose(res.grad_y0, want.grad_y0, rtol=1e-6)
        np.testing.assert_allclose(res.grad_params, want.grad_params, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ckpt.grad_t[index], want.grad_t, rtol=1e-6, atol=1e-9)
    # Decreasing output times too.
    grid_down, index_down = sb.checkpoint_grid(t[::-1], 2)
    assert np.array_equal(grid_down[index_down], t[::-1]) and (np.diff(grid_down) < 0).all()


def test_quadrature_adjoint_in_a_tf_function_and_without_a_jacobian(stiff):
    func, y0, t, ref = stiff

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            tape.watch(y0)
            loss = tf.reduce_sum(tfode.odeint(func, y0, t, method="radau", rtol=1e-6,
                                              atol=1e-6, adjoint="quadrature") ** 2)
        return tape.gradient(loss, [y0, *func.trainable_variables])

    assert _error([g.numpy() for g in grads()], ref) < 1e-5


def test_dense_solutions_travel_with_the_gradient_so_a_late_gradient_still_works(stiff):
    # The forward solution is a tensor the gradient keeps: twenty forward solves later,
    # the first one's gradient is still there and equals a fresh one.
    func, y0, t, _ = stiff
    kwargs = dict(method="bdf", rtol=1e-6, atol=1e-6, adjoint="quadrature",
                  options={"jacobian": "autodiff"})
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(y0)
        losses = [tf.reduce_sum(tfode.odeint(func, y0, t, **kwargs) ** 2) for _ in range(20)]
    late = tape.gradient(losses[0], y0)
    fresh, _ = _gradients(func, y0, t, **kwargs)
    np.testing.assert_allclose(late.numpy(), fresh[0], rtol=1e-12)


def test_every_method_serves_the_dense_adjoints_and_bad_adjoints_are_refused():
    w = tf.Variable(0.7, dtype=tf.float64)
    f = lambda s, y: -w * y  # noqa: E731
    y0 = tf.constant([1.0, 2.0], tf.float64)
    t = [0.0, 0.5, 1.0]
    for method in sb.METHODS:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tfode.odeint(f, y0, t, method=method, rtol=1e-9, atol=1e-11,
                                              adjoint="quadrature"))
        # d/dw sum(y0 e^{-w t}) over the output times; the DOPRI codes' cubic Hermite
        # dense output is of fourth order only.
        want = -sum(s * np.exp(-0.7 * s) * 3.0 for s in t)
        hermite = sb.METHODS[method].dense_kind == "hermite"
        assert float(tape.gradient(loss, w)) == pytest.approx(
            want, rel=1e-4 if hermite else 1e-5), method
    with pytest.raises(ValueError, match="adjoint must be one of backsolve, quadrature"):
        tfode.odeint(f, y0, [0.0, 1.0], adjoint="interpolate")
    with pytest.raises(ValueError, match="nodes must be a positive integer"):
        tfode.Quadrature(nodes=0)
    with pytest.raises(ValueError, match="Unknown method 'vode'"):
        tfode.Backsolve(method="vode")
    with pytest.raises(TypeError, match=r"no longer takes adjoint_rtol=.*Backsolve\(rtol="):
        tfode.odeint(f, y0, [0.0, 1.0], adjoint_rtol=1e-8)
    with pytest.raises(TypeError, match=r"options\['checkpoints'\] is an argument of the adj"):
        tfode.odeint(f, y0, [0.0, 1.0], adjoint="checkpointed", options={"checkpoints": 3})
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['mxstep'\] for method 'adams'"):
        tfode.odeint(f, y0, [0.0, 1.0], adjoint=tfode.Quadrature(method="adams",
                                                                 options={"mxstep": 9}))


def test_odeblock_takes_the_quadrature_adjoint_and_keeps_it_through_save_and_load(tmp_path):
    import keras

    from tfode.layers import ConcatMLP, ODEBlock

    keras.utils.set_random_seed(0)
    block = ODEBlock(ConcatMLP((8,), dtype="float64"), t=(0.0, 1.0), method="radau",
                     rtol=1e-8, atol=1e-8, adjoint="quadrature", dtype="float64")
    model = keras.Sequential([keras.Input((3,), dtype="float64"), block])
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 3)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    got = tape.gradient(loss, model.trainable_variables)
    # The same block with the backsolve adjoint (fine on these non-stiff dynamics).
    block.adjoint, block.method = "backsolve", "dopri5"
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    want = tape.gradient(loss, model.trainable_variables)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-9)
    block.adjoint, block.method = "quadrature", "radau"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].adjoint == "quadrature" and loaded.layers[-1].method == "radau"


def test_banded_per_sample_jacobian_equals_the_dense_jacobians_blocks(stiff):
    from tfode._compile import compile_dynamics

    func, y0, _, _ = stiff
    cb = compile_dynamics(func, tf.float64, y0.shape, "solve_ivp", None, False).callbacks(
        tuple(y0.shape))
    y = np.random.default_rng(1).normal(size=y0.shape).ravel()
    dense = cb.jac(0.3, y)
    blocks = cb.block_jac(0.3, y)
    assert blocks.shape == (8, 4, 4)
    layout = sb.BlockLayout(8, 4)
    np.testing.assert_allclose(layout.dense(blocks), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layout.sparse(blocks).toarray(), dense, rtol=1e-12, atol=1e-12)
    # LAPACK band storage: ab[u + i - j, j] = J[i, j] with u = l = d - 1.
    ab = layout.banded(blocks)
    i, j = np.nonzero(np.abs(np.subtract.outer(np.arange(32), np.arange(32))) <= 3)
    np.testing.assert_allclose(ab[3 + i - j, j], dense[i, j], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("adjoint,method", [("quadrature", "bdf"), ("quadrature", "lsoda"),
                                            ("quadrature", "radau"), ("checkpointed", "bdf")])
def test_banded_autodiff_jacobians_give_the_stiff_mlp_gradient(stiff, adjoint, method):
    func, y0, t, ref = stiff
    grads, stats = _gradients(func, y0, t, method=method, rtol=1e-6, atol=1e-6,
                              adjoint=adjoint, options={"jacobian": "banded"})
    assert _error(grads, ref) < 1e-5
    assert stats.as_dict()["njev_forward"] >= 1


def test_banded_jacobian_with_the_backsolve_adjoint_and_its_errors(stiff):
    func, y0, t, _ = stiff
    banded = tfode.odeint(func, y0, t, method="lsoda", rtol=1e-8, atol=1e-8,
                          options={"jacobian": "banded"})
    dense = tfode.odeint(func, y0, t, method="lsoda", rtol=1e-8, atol=1e-8,
                         options={"jacobian": "autodiff"})
    np.testing.assert_allclose(banded, dense, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="do not pass lband or uband"):
        tfode.odeint(func, y0, t, method="bdf", options={"jacobian": "banded", "lband": 1})
    with pytest.raises(ValueError, match="needs a batch of samples along the first axis"):
        tfode.odeint(lambda s, y: -y, tf.constant([1.0, 2.0], tf.float64), [0.0, 1.0],
                     method="bdf", options={"jacobian": "banded"})


def test_vode_adams_serves_the_dense_adjoints_through_recorded_steps():
    # Non-stiff decay with closed forms; VODE's Adams steps recorded and Hermite-interpolated.
    k = np.array([2.0, 0.5])
    y0 = np.array([1.5, -0.7])
    t = np.array([0.0, 0.3, 1.0, 2.0])
    fun, vjp = _decay(k)

    fwd = sb.dense_solve(fun, y0, t, "adams", 1e-9, 1e-11)
    ys = y0 * np.exp(-np.outer(t, k))
    np.testing.assert_allclose(fwd.ys, ys, rtol=1e-7, atol=1e-9)
    s = np.linspace(0.0, 2.0, 41)
    np.testing.assert_allclose(fwd.sol(s).T, y0 * np.exp(-np.outer(s, k)), rtol=1e-6, atol=1e-8)
    res = sb.quadrature_adjoint(vjp, t, fwd, 2 * fwd.ys, 2, method="adams", rtol=1e-9,
                                atol=1e-11, fun=fun)
    np.testing.assert_allclose(res.grad_params, np.sum(2 * ys * (-t[:, None] * ys), 0),
                               rtol=1e-6)
    np.testing.assert_allclose(res.grad_y0, np.sum(2 * ys * np.exp(-np.outer(t, k)), 0),
                               rtol=1e-6)
    # Through tfode: the same gradients as the backsolve adjoint on non-stiff dynamics.
    w = tf.Variable([[-0.4, 1.0], [-1.0, -0.2]], dtype=tf.float64)
    z0 = tf.constant([[1.0, 0.5], [-0.3, 0.8]], tf.float64)
    grads = []
    for adjoint in ("quadrature", "backsolve"):
        with tf.GradientTape() as tape:
            tape.watch(z0)
            out = tfode.odeint(lambda s, z: tf.tanh(z @ w), z0, [0.0, 0.5, 1.5],
                               method="adams", rtol=1e-9, atol=1e-9, adjoint=adjoint)
            loss = tf.reduce_sum(out ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, [z0, w])])
    for g, r in zip(*grads):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-9)
