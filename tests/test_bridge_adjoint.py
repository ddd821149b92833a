"""solvers_bridge.adjoint: the paper's augmented adjoint against closed-form gradients."""

import numpy as np
import pytest
from problems import BY_NAME, CATALOGUE, riccati_analytic_grads

import solvers_bridge as sb

ADAPTIVE = sorted(sb.METHODS)
TOL = dict(rtol=1e-10, atol=1e-12)


def run_adjoint(problem, t, w, method, **kw):
    fun = lambda s, y: problem.f(s, y, problem.params)  # noqa: E731
    ys, _ = sb.solve(fun, problem.y0, t, method, **TOL)
    return sb.adjoint(problem.vjp, t, ys, w, problem.params.size, method=method, fun=fun,
                      **TOL, **kw)


def assert_grads_close(res, expected, rtol=1e-6):
    gy0, gp, gt = expected
    scale = max(np.abs(gy0).max(), np.abs(gp).max(), np.abs(gt).max())
    np.testing.assert_allclose(res.grad_y0, gy0, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(res.grad_params, gp, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(res.grad_t, gt, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("problem", CATALOGUE, ids=lambda p: p.name)
def test_gradients_match_closed_form_over_several_output_times(method, problem):
    t = np.array([0.0, 0.4, 0.9, 1.5])
    w = np.random.default_rng(1).normal(size=(t.size, problem.y0.size))
    res = run_adjoint(problem, t, w, method)
    assert_grads_close(res, problem.loss_grads(t, w))
    assert res.info.nintervals == 3 and res.info.success
    assert res.info.nfev > 0


@pytest.mark.parametrize("problem", CATALOGUE, ids=lambda p: p.name)
def test_reverse_time_gradients(problem):
    t = np.array([1.5, 0.9, 0.0])
    w = np.random.default_rng(2).normal(size=(t.size, problem.y0.size))
    res = run_adjoint(problem, t, w, "adams")
    assert_grads_close(res, problem.loss_grads(t, w))


def test_riccati_against_analytic_gradient():
    p = BY_NAME["riccati"]
    t = np.array([0.0, 0.5, 1.3, 2.0])
    w = np.random.default_rng(3).normal(size=(t.size, 2))
    res = run_adjoint(p, t, w, "lsoda")
    assert_grads_close(res, riccati_analytic_grads(t, w, p.y0, p.params[0]), rtol=1e-7)


@pytest.mark.parametrize("problem", CATALOGUE, ids=lambda p: p.name)
def test_pure_algorithm_1_without_restart(problem):
    t = np.array([0.0, 0.5, 1.0])
    w = np.random.default_rng(4).normal(size=(t.size, problem.y0.size))
    res = run_adjoint(problem, t, w, "adams", restart=False)
    assert_grads_close(res, problem.loss_grads(t, w), rtol=1e-5)


@pytest.mark.parametrize("method", ["adams", "lsoda", "dopri5"])
def test_seminorm_gives_the_same_gradients(method):
    p = BY_NAME["linear"]
    t = np.array([0.0, 1.0, 2.0])
    w = np.random.default_rng(5).normal(size=(t.size, 3))
    full = run_adjoint(p, t, w, method)
    semi = run_adjoint(p, t, w, method, seminorm=True)
    assert_grads_close(semi, p.loss_grads(t, w), rtol=1e-6)
    assert semi.info.nfev <= full.info.nfev * 1.1


def test_loss_on_first_output_only_gives_identity_gradient():
    p = BY_NAME["decay"]
    t = np.array([0.0, 1.0])
    w = np.array([[1.0, 2.0], [0.0, 0.0]])
    res = run_adjoint(p, t, w, "adams")
    np.testing.assert_allclose(res.grad_y0, [1.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(res.grad_params, [0.0], atol=1e-12)


def test_default_adjoint_method_avoids_dense_fd_jacobians():
    assert sb.default_adjoint_method("lsoda", 21) == "lsoda"
    assert sb.default_adjoint_method("lsoda", 5000) == "adams"
    assert sb.default_adjoint_method("bdf", 5000) == "adams"
    assert sb.default_adjoint_method("odeint", 5000) == "adams"
    assert sb.default_adjoint_method("dopri5", 5000) == "dopri5"
    assert sb.default_adjoint_method("lsoda", 5000, max_fd_jacobian_size=10_000) == "lsoda"


def test_default_adjoint_method_takes_dopri5_after_short_non_stiff_multistep_intervals():
    def rule(method, steps, intervals=99, stiff=False, **kw):
        forward = sb.SolveInfo(method=method, nsteps=steps, stiff=stiff)
        return sb.default_adjoint_method(method, 985, forward=forward, intervals=intervals,
                                         rtol=1e-8, atol=1e-8, **kw)

    for method in ("lsoda", "odeint", "adams"):
        assert rule(method, 30) == "dopri5"  # 0.3 steps per interval
        assert rule(method, 30, stiff=True) == method  # a stiff forward: a stiff backward
        assert rule(method, 4 * 99) == method  # long intervals: the multistep code
    assert rule("odeint", 30, intervals=1) == "odeint"  # one interval: no restarts
    assert rule("rk45", 30) == "rk45"  # one-step methods keep themselves
    assert rule("odeint", 30, options={"min_step": 1e-9}) == "odeint"  # dopri5 lacks it
    forward = sb.SolveInfo(method="lsoda", nsteps=30)
    assert sb.default_adjoint_method("lsoda", 985, forward=forward, intervals=99,
                                     rtol=np.full(985, 1e-8), atol=1e-8) == "lsoda"
    assert sb.default_adjoint_method("lsoda", 5000, forward=forward, intervals=99,
                                     rtol=np.full(5000, 1e-8), atol=1e-8) == "adams"


def test_solve_info_says_whether_a_stiff_method_ran():
    y0, t = np.array([2.0, 0.0]), np.linspace(0.0, 50.0, 6)

    def van_der_pol(mu):
        return lambda s, y: np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    for method in ("lsoda", "odeint"):
        assert sb.solve(van_der_pol(1000.0), y0, t, method, 1e-6, 1e-6)[1].stiff
        assert not sb.solve(van_der_pol(0.5), y0, t, method, 1e-6, 1e-6)[1].stiff
    assert sb.solve(van_der_pol(0.5), y0, t, "bdf", 1e-6, 1e-6)[1].stiff
    assert not sb.solve(van_der_pol(0.5), y0, t, "adams", 1e-6, 1e-6)[1].stiff


def test_adjoint_failure_names_the_interval():
    p = BY_NAME["decay"]
    t = np.array([0.0, 1.0, 2.0])
    ys, _ = sb.solve(lambda s, y: p.f(s, y, p.params), p.y0, t, "adams")
    with pytest.raises(sb.SolverError, match=r"during the adjoint pass.*from t=2.0 to t=1.0"):
        sb.adjoint(p.vjp, t, ys, np.ones_like(ys), 1, method="adams", max_steps=2,
                   rtol=1e-12, atol=1e-14)


def test_adjoint_shape_checks():
    with pytest.raises(ValueError, match=r"grad_ys must have the shape of ys"):
        sb.adjoint(lambda t, y, a: None, [0.0, 1.0], np.zeros((2, 3)), np.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match=r"ys must have shape \(len\(t\), n\)"):
        sb.adjoint(lambda t, y, a: None, [0.0, 1.0], np.zeros((3, 3)), np.zeros((3, 3)), 0)
