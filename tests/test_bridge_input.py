"""The bridge's handling of options and states at their edges: step options in both
directions, zero tolerances, options of the wrong type, empty states, failure
figures, and resident memory over thousands of solves (SciPy's C wrappers leak)."""

import gc

import numpy as np
import pytest

import solvers_bridge as sb

ADAPTIVE = sorted(sb.METHODS)
#: The methods over SciPy's C wrappers (the pure-Python ones cannot leak that way).
COMPILED = ["lsoda", "odeint", "adams", "bdf", "dopri5", "dop853"]


def decay(t, y):
    return -y


def counted(fun):
    calls = []

    def wrapped(t, y):
        calls.append(t)
        return fun(t, y)

    return wrapped, calls


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("t", [[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]], ids=["forward", "reverse"])
def test_first_step_works_in_both_directions(method, t):
    # first_step is a size: LSODA, VODE and odeint want it with the direction's sign
    # and failed with "illegal input" on a reverse solve before the bridge applied it.
    y0 = np.array([1.0, 2.0])
    t = np.array(t)
    ys, info = sb.solve(decay, y0, t, method=method, rtol=1e-9, atol=1e-12, first_step=0.01)
    exact = y0 * np.exp(-(t[:, None] - t[0]))
    np.testing.assert_allclose(ys, exact, rtol=1e-6)
    assert info.success and info.nsteps > 0


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("t", [[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], ids=["forward", "reverse"])
def test_failure_messages_report_true_figures(method, t):
    t = np.array(t)
    with pytest.raises(sb.SolverError) as err:
        sb.solve(lambda s, y: -1000.0 * y, np.ones(2), t, method=method, max_steps=3)
    info = err.value.info
    lo, hi = sorted((t[0], t[-1]))
    assert lo <= info.t_reached <= hi
    assert 0 < info.nsteps <= 3 * (len(t) - 1)
    assert info.nfev > 0
    assert f"{info.nsteps} steps" in str(err.value)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_zero_tolerances_are_refused_before_any_evaluation(method):
    fun, calls = counted(decay)
    with pytest.raises(ValueError, match="rtol and atol are both zero"):
        sb.solve(fun, np.ones(2), [0.0, 1.0], method=method, rtol=0.0, atol=0.0)
    assert calls == []
    # Zero in one of them alone is a pure absolute (or relative) error: allowed.
    ys, _ = sb.solve(decay, np.ones(2), [0.0, 1.0], method=method, rtol=0.0, atol=1e-10)
    np.testing.assert_allclose(ys[-1], np.exp(-1.0), rtol=1e-6)


def test_zero_tolerances_in_one_component_are_named():
    with pytest.raises(ValueError, match=r"component\(s\) \[1\]"):
        sb.solve(decay, np.ones(2), [0.0, 1.0], method="lsoda", rtol=np.array([1e-6, 0.0]),
                 atol=np.array([0.0, 0.0]))


@pytest.mark.parametrize("option, value, match", [
    ("first_step", "0.1", "first_step must be a positive number; got '0.1'"),
    ("max_step", [0.1], "max_step must be a positive number"),
    ("max_steps", 10.5, "max_steps must be an integer >= 1; got 10.5"),
    ("max_steps", True, "max_steps must be an integer"),
    ("max_fd_jacobian_size", "big", "max_fd_jacobian_size must be an integer"),
])
@pytest.mark.parametrize("method", ["lsoda", "odeint", "adams", "dopri5", "radau"])
def test_options_of_the_wrong_type_are_refused_naming_them(method, option, value, match):
    with pytest.raises(TypeError, match=match):
        sb.solve(decay, np.ones(2), [0.0, 1.0], method=method, **{option: value})


def test_min_step_above_max_step_is_refused():
    with pytest.raises(ValueError, match="min_step=0.5 is larger than max_step=0.1"):
        sb.solve(decay, np.ones(2), [0.0, 1.0], method="adams", min_step=0.5, max_step=0.1)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_an_empty_state_gives_an_empty_result(method):
    fun, calls = counted(decay)
    t = np.array([0.0, 0.5, 1.0])
    ys, info = sb.solve(fun, np.zeros(0), t, method=method)
    assert ys.shape == (3, 0) and info.success and info.nfev == 0 and calls == []
    sol = sb.dense_solve(fun, np.zeros(0), t, method=method)
    assert sol.ys.shape == (3, 0) and sol(0.25).shape == (0,) and calls == []


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


@pytest.mark.parametrize("dense", [False, True], ids=["solve", "dense"])
@pytest.mark.parametrize("method", COMPILED)
def test_thousands_of_solves_keep_resident_memory_flat(method, dense):
    # SciPy 1.17.1's lsoda wrapper keeps a reference to its work arrays on every call
    # (about 140 KiB per solve here) and the DOPRI wrappers to their callbacks (about
    # 8 KiB per solve, the work array with them): 1,000 solves would grow by 8 to 140 MiB.
    rng = np.random.default_rng(0)
    a = -np.eye(128) + 0.05 * rng.standard_normal((128, 128))
    y0, t = np.ones(128), np.linspace(0.0, 1.0, 5)
    run = sb.dense_solve if dense else sb.solve

    def solve_many(count):
        for _ in range(count):
            run(lambda s, y: a @ y, y0, t, method=method, rtol=1e-5, atol=1e-7)
        gc.collect()

    solve_many(100)
    before = _resident_mib()
    solve_many(1000)
    assert _resident_mib() - before < 3.0
