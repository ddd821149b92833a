"""solvers_bridge.solve: accuracy, statistics and failures, on the shared catalogue."""

import numpy as np
import pytest
import scipy.integrate as si
from problems import BY_NAME, CATALOGUE

import solvers_bridge as sb

ADAPTIVE = sorted(sb.METHODS)
RTOL, ATOL = 1e-8, 1e-10


def normalised_error(ys, exact):
    return np.max(np.abs(ys - exact) / (ATOL + RTOL * np.abs(exact)))


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("problem", CATALOGUE, ids=lambda p: p.name)
@pytest.mark.parametrize("direction", [1, -1], ids=["forward", "reverse"])
def test_accuracy_against_closed_form(method, problem, direction):
    t = direction * np.array([0.0, 0.3, 1.0, 1.7])
    ys, info = sb.solve(lambda s, y: problem.f(s, y, problem.params), problem.y0, t, method,
                        rtol=RTOL, atol=ATOL)
    exact = problem.exact(t, t[0], problem.y0, problem.params)
    assert ys.shape == (4, problem.y0.size)
    np.testing.assert_array_equal(ys[0], problem.y0)
    # Global error of a tolerance-controlled solve: within a modest multiple of the tolerance.
    assert normalised_error(ys, exact) < 200, normalised_error(ys, exact)
    assert info.success and info.status == 0 and info.t_reached == pytest.approx(t[-1])


@pytest.mark.parametrize("method", ADAPTIVE)
def test_evaluation_count_equals_counted_calls_and_solver_count(method):
    calls = []
    p = BY_NAME["linear"]

    def f(s, y):
        calls.append(s)
        return p.f(s, y, p.params)

    _, info = sb.solve(f, p.y0, [0.0, 0.5, 2.0], method, rtol=1e-6, atol=1e-8)
    assert info.nfev == len(calls) > 0
    # The solver's own count, from SciPy's own interface.
    if method == "odeint":
        _, d = si.odeint(lambda y, s: p.f(s, y, p.params), p.y0, [0.0, 0.5, 2.0], rtol=1e-6,
                         atol=1e-8, full_output=True, mxstep=sb.DEFAULT_MAX_STEPS)
        assert info.nfev == d["nfe"][-1]
    elif sb.METHODS[method].integrator is None:  # SciPy's own solve_ivp, same solver class
        res = si.solve_ivp(lambda s, y: p.f(s, y, p.params), (0.0, 2.0), p.y0,
                           method=sb.METHODS[method]._ivp_class.__name__, rtol=1e-6, atol=1e-8)
        # SciPy's Radau leaves its finite-difference Jacobians' n calls each out of nfev.
        assert info.nfev == res.nfev + (res.njev * p.y0.size if method == "radau" else 0)
    else:
        cls = sb.METHODS[method]
        r = si.ode(lambda s, y: p.f(s, y, p.params)).set_integrator(
            cls._scipy_name, rtol=1e-6, atol=1e-8, nsteps=sb.DEFAULT_MAX_STEPS,
            **cls._scipy_kwargs)
        r.set_initial_value(p.y0, 0.0)
        n = 0
        for s in (0.5, 2.0):
            r.integrate(s)
            n += r._integrator.iwork[16] if method.startswith("dop") else 0
        expected = n if method.startswith("dop") else r._integrator.iwork[11]
        assert info.nfev == expected


# Evaluation budgets on the decay problem at rtol=1e-8 (measured counts plus ~25%).
BUDGET = {"lsoda": 110, "adams": 110, "bdf": 260, "odeint": 110, "dopri5": 330, "dop853": 200,
          "radau": 420, "rk45": 200, "rk23": 900}


@pytest.mark.parametrize("method", ADAPTIVE)
def test_evaluation_budget(method):
    p = BY_NAME["decay"]
    _, info = sb.solve(lambda s, y: p.f(s, y, p.params), p.y0, [0.0, 2.0], method,
                       rtol=RTOL, atol=ATOL)
    assert info.nfev <= BUDGET[method], info


def test_lsoda_reports_method_switches_on_a_stiffening_problem():
    # Robertson's chemical kinetics: LSODA starts non-stiff and switches to BDF.
    def rober(t, y):
        return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2],
                         0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                         3e7 * y[1] ** 2])

    t = np.logspace(-5, 3, 20)
    t = np.concatenate([[0.0], t])
    ys, info = sb.solve(rober, [1.0, 0.0, 0.0], t, "lsoda", rtol=1e-6, atol=1e-10)
    assert info.nswitches >= 1
    assert info.njev >= 1
    np.testing.assert_allclose(ys[-1].sum(), 1.0, rtol=1e-5)  # mass is conserved


def test_dense_and_banded_jacobians_are_used():
    # A diagonal linear system: the banded Jacobian has one band.
    lam = np.array([-1.0, -10.0, -100.0, -1000.0])
    f = lambda t, y: lam * y  # noqa: E731
    t = [0.0, 0.5, 1.0]
    exact = np.exp(np.outer(t, lam))
    for method in ("bdf", "lsoda", "odeint"):
        calls = []

        def dense(s, y, calls=calls):
            calls.append(s)
            return np.diag(lam)

        ys, info = sb.solve(f, np.ones(4), t, method, rtol=1e-8, atol=1e-12, jac=dense)
        np.testing.assert_allclose(ys, exact, atol=1e-7)
        assert info.njev == len(calls) >= 1
        ys, info = sb.solve(f, np.ones(4), t, method, rtol=1e-8, atol=1e-12,
                            jac=lambda s, y: lam[None, :], lband=0, uband=0)
        np.testing.assert_allclose(ys, exact, atol=1e-7)


def test_callback_receives_a_copy():
    kept = []

    def f(t, y):
        kept.append(y)
        return -y

    sb.solve(f, [1.0, 2.0], [0.0, 1.0], "adams")
    assert len({id(k) for k in kept}) == len(kept)
    # Values kept by the callback are those it was called with, not overwritten later.
    assert not all(np.array_equal(kept[0], k) for k in kept[1:])
    np.testing.assert_array_equal(kept[0], [1.0, 2.0])


# ---------------------------------------------------------------------------------------
# Bad input and failures: the error type, and a message that names problem and fix.


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown method 'rk99'.*adams, bdf, dop853"):
        sb.solve(lambda t, y: -y, [1.0], [0.0, 1.0], "rk99")


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['mxstep'\].*'max_steps'"):
        sb.solve(lambda t, y: -y, [1.0], [0.0, 1.0], "adams", mxstep=10)


def test_jacobian_refused_by_methods_without_one():
    with pytest.raises(TypeError, match="does not use a Jacobian"):
        sb.solve(lambda t, y: -y, [1.0], [0.0, 1.0], "dopri5", jac=lambda t, y: -np.eye(1))


@pytest.mark.parametrize("t, match", [
    ([0.0, 1.0, 0.5], r"strictly increasing or strictly decreasing; got t\[1\]=1.0"),
    ([0.0, 1.0, 1.0], r"t\[1\]=1.0 followed by t\[2\]=1.0"),
    ([0.0, np.nan], "t must be finite"),
    ([[0.0, 1.0]], "1-D"),
    ([], "non-empty"),
])
def test_bad_times(t, match):
    with pytest.raises(ValueError, match=match):
        sb.solve(lambda s, y: -y, [1.0], t)


def test_bad_initial_state():
    with pytest.raises(ValueError, match=r"non-finite values at indices \[1\]"):
        sb.solve(lambda t, y: -y, [1.0, np.inf], [0.0, 1.0])
    with pytest.raises(ValueError, match="must be 1-D"):
        sb.solve(lambda t, y: -y, [[1.0]], [0.0, 1.0])
    with pytest.raises(TypeError, match="real floating-point"):
        sb.solve(lambda t, y: -y, ["a"], [0.0, 1.0])


def test_bad_tolerances():
    with pytest.raises(ValueError, match="rtol must be a non-negative finite number"):
        sb.solve(lambda t, y: -y, [1.0], [0.0, 1.0], rtol=-1)
    with pytest.raises(ValueError, match=r"atol must be a scalar or have one entry per state"):
        sb.solve(lambda t, y: -y, [1.0, 2.0], [0.0, 1.0], atol=[1e-6, 1e-6, 1e-6])


@pytest.mark.parametrize("method", ADAPTIVE)
def test_dynamics_returning_wrong_shape(method):
    with pytest.raises(ValueError, match=r"shape \(3,\) at t=.*expected shape \(2,\)"):
        sb.solve(lambda t, y: np.ones(3), [1.0, 2.0], [0.0, 1.0], method)


class Boom(Exception):
    pass


@pytest.mark.parametrize("method", ADAPTIVE)
def test_dynamics_exception_surfaces_unchanged_with_a_note(method):
    calls = []

    def f(t, y):
        calls.append(t)
        if t > 0.5:
            raise Boom("bad dynamics")
        return -y

    with pytest.raises(Boom, match="bad dynamics") as info:
        sb.solve(f, [1.0], [0.0, 0.25, 1.0], method)
    assert any(f"'{method}' solve" in note for note in info.value.__notes__)
    # The user's function is not called again after it raised.
    assert sum(1 for s in calls if s > 0.5) == 1


@pytest.mark.parametrize("method", ADAPTIVE)
def test_non_finite_dynamics_is_an_error(method):
    def f(t, y):
        return np.full_like(y, np.nan) if t > 0.3 else -y

    with pytest.raises(FloatingPointError, match="non-finite values at t="):
        sb.solve(f, [1.0, 1.0], [0.0, 1.0], method)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_too_many_steps_is_an_error_with_the_partial_result(method):
    f = lambda t, y: np.cos(50.0 * t) * y  # noqa: E731
    with pytest.raises(sb.SolverError) as info:
        # RK23, of third order, needs more steps than 40 for the first short interval.
        sb.solve(f, [1.0], [0.0, 0.01, 20.0], method, rtol=1e-10, atol=1e-12,
                 max_steps=400 if method == "rk23" else 40)
    err = info.value
    assert err.method == method and "max_steps" in str(err)
    assert err.t is not None and 0.01 <= err.t < 20.0
    assert err.ys.shape == (2, 1)  # the two output times that were reached
    assert not err.info.success


@pytest.mark.parametrize("method", ["adams", "lsoda", "odeint", "dopri5", "bdf"])
def test_finite_time_blow_up_is_an_error(method):
    # y' = y^2, y(0) = 1 has y = 1 / (1 - t): singular at t = 1.
    with pytest.raises((sb.SolverError, FloatingPointError)) as info:
        sb.solve(lambda t, y: y * y, [1.0], [0.0, 0.5, 2.0], method)
    assert "t=" in str(info.value)


def test_step_size_underflow_names_step():
    with pytest.raises(sb.SolverError, match=r"step size") as info:
        sb.solve(lambda t, y: y * y, [1.0], [0.0, 2.0], "dopri5")
    assert info.value.t == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("outer, inner", [("lsoda", "lsoda"), ("lsoda", "odeint"),
                                          ("adams", "bdf"), ("dopri5", "dopri5")])
def test_nested_solve_of_same_integrator_is_refused(outer, inner):
    def f(t, y):
        sb.solve(lambda s, z: -z, [1.0], [0.0, 1.0], inner)
        return -y

    with pytest.raises(sb.NestedSolveError, match="not reentrant"):
        sb.solve(f, [1.0], [0.0, 1.0], outer)


def test_nested_solve_of_different_integrators_is_correct():
    def f(t, y):
        inner, _ = sb.solve(lambda s, z: -z, [1.0], [0.0, 1.0], "dopri5", rtol=1e-10,
                            atol=1e-12)
        return -inner[-1] * y  # -e^-1 y

    ys, _ = sb.solve(f, [1.0], [0.0, 1.0], "lsoda", rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ys[-1], np.exp(-np.exp(-1.0)), rtol=1e-8)


def test_dense_fd_jacobian_on_large_state_is_refused():
    n = 1200
    lam = -np.logspace(0, 4, n)
    # BDF always needs a Jacobian: refused before any work.
    with pytest.raises(sb.SolverError, match=r"dense finite-difference Jacobian of the 1200"):
        sb.solve(lambda t, y: lam * y, np.ones(n), [0.0, 1.0], "bdf")
    # LSODA only forms one when it switches to its stiff method: stopped when it starts.
    calls = []

    def f(t, y):
        calls.append(t)
        return lam * y

    with pytest.raises(sb.SolverError, match="switched to its stiff method"):
        sb.solve(f, np.ones(n), [0.0, 10.0], "lsoda", rtol=1e-6, atol=1e-9)
    assert len(calls) < 1000 + n // 2
    # Raising the limit, or a banded Jacobian, lets it run.
    ys, info = sb.solve(f, np.ones(n), [0.0, 10.0], "lsoda", rtol=1e-6, atol=1e-9,
                        lband=0, uband=0)
    assert info.success and np.all(np.abs(ys[-1]) < 1e-3)


def test_lsoda_workspace_too_large_for_the_machine_is_a_clear_error():
    # scipy.integrate.ode('lsoda') allocates its stiff method's dense n x n workspace
    # before the first step; for n = 2^23 that is 512 TiB, beyond any address space.
    n = 2 ** 23
    with pytest.raises(sb.SolverError, match=r"dense 8388608x8388608 Jacobian .*'adams'"):
        sb.solve(lambda t, y: -y, np.ones(n), [0.0, 1.0], "lsoda")


def test_vode_bdf_with_dense_jacobians_is_as_efficient_as_lsoda():
    """SciPy 1.17's VODE mishandles full Jacobians (scipy/scipy#24933): the bridge hands
    them over as a band of full width. Van der Pol at mu = 1000 failed before with
    'excess work'; Robertson took 3x the steps and 30x the Jacobians."""
    def vdp(t, y, mu=1000.0):
        return np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def rob(t, y):
        return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2],
                         0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2])

    def rob_jac(t, y):
        return np.array([[-0.04, 1e4 * y[2], 1e4 * y[1]],
                         [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                         [0.0, 6e7 * y[1], 0.0]])

    for f, jac, y0, t_end in ((vdp, None, [2.0, 0.0], 3000.0), (rob, None, [1.0, 0, 0], 1e5),
                              (rob, rob_jac, [1.0, 0, 0], 1e5)):
        ys, info = sb.solve(f, y0, [0.0, t_end], "bdf", 1e-6, 1e-8, jac=jac)
        ref, ref_info = sb.solve(f, y0, [0.0, t_end], "lsoda", 1e-9, 1e-11, jac=jac)
        np.testing.assert_allclose(ys[-1], ref[-1], rtol=1e-3, atol=1e-7)
        assert info.nsteps < 1.5 * ref_info.nsteps and info.njev < 50
