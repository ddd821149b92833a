"""The method registry: one integrator per name, its capabilities, and the README's
method table checked against it."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import solvers_bridge as sb
import tfode

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _readme_methods() -> dict[str, dict]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Methods"):]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        for name in re.findall(r"`(\w+)`", cells[0]):
            rows[name] = dict(zip(header, cells))
    return rows


def test_readme_method_table_agrees_with_the_registry():
    table, registry = _readme_methods(), tfode.methods()
    assert set(table) == set(registry)
    yes = {"yes": True, "no": False}
    for name, caps in registry.items():
        row = table[name]
        assert yes[row["reentrant"]] == caps["reentrant"], name
        assert yes[row["stiff"]] == caps["stiff"], name
        assert yes[row["vector tolerances"]] == caps["vector_tolerances"], name
        jacobians = [] if row["Jacobians"] == "-" else row["Jacobians"].split(", ")
        assert jacobians == caps["jacobians"], name
        assert row["dense output"] == (caps["dense_output"] or "-"), name
        assert row["integrator"] == (caps["integrator"] or "-"), name
        if not caps["in_graph"]:
            assert row["SciPy call"] == f"`{caps['scipy_call']}`", name


def test_one_name_is_one_integrator_in_every_operation():
    # The dense solve steps the same code as the solve to output times: LSODA's dense
    # output (scipy.integrate.LSODA) drives ode('lsoda') itself, and VODE and the
    # pure-Python solvers are stepped directly, so the states agree to the tolerance
    # and the step counts are those of the same integrator.
    f = lambda t, y: -np.array([1.0, 10.0]) * y  # noqa: E731
    t = [0.0, 0.5, 1.0]
    exact = np.exp(-np.outer(t, [1.0, 10.0]))
    for name, cls in sb.METHODS.items():
        ys, info = sb.solve(f, [1.0, 1.0], t, name, 1e-9, 1e-12)
        dense = sb.dense_solve(f, [1.0, 1.0], t, name, 1e-9, 1e-12)
        np.testing.assert_allclose(dense.ys, exact, rtol=1e-6, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(ys, exact, rtol=1e-6, atol=1e-9, err_msg=name)
        assert dense.info.method == info.method == name
        assert dense.kind == cls.dense_kind
        s = np.linspace(0.0, 1.0, 23)
        # The integrators' own interpolants are as accurate as the solve; the cubic
        # Hermite one of the DOPRI codes (whose steps are long) is of fourth order only.
        tol = 1e-3 if cls.dense_kind == "hermite" else 1e-5
        np.testing.assert_allclose(dense(s).T, np.exp(-np.outer(s, [1.0, 10.0])),
                                   rtol=tol, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("method", sorted(sb.METHODS))
def test_events_are_located_by_every_method_on_the_event_surface(method):
    # y' = -y from 2, event y = 1: t* = log 2; the state returned satisfies the event
    # function to solver precision (it is the integrator's own state there).
    sol = sb.solve_to_event(lambda t, y: -y, [2.0], 0.0, 5.0, lambda t, y: y[0] - 1.0,
                            method, 1e-10, 1e-10)
    assert sol.t_events.shape == (1,) and sol.y_events.shape == (1, 1)
    assert abs(sol.t_events[0] - np.log(2.0)) < 1e-8
    assert abs(sol.y_events[0, 0] - 1.0) <= 1e-8
    assert sol.info.nfev > 0 and sol.span[1] == pytest.approx(sol.t_events[0])


def test_nested_dense_solves_of_one_integrator_are_refused_and_reentrant_ones_nest():
    def outer(t, y):
        sb.dense_solve(lambda s, z: -z, [1.0], [0.0, 0.1], "lsoda")
        return -y

    with pytest.raises(sb.NestedSolveError, match="same integrator \\(lsoda\\)"):
        sb.dense_solve(outer, [1.0], [0.0, 1.0], "odeint")

    def outer_ok(t, y):
        inner = sb.dense_solve(lambda s, z: -z, [1.0], [0.0, 0.1], "rk45")
        return -y * inner.ys[-1, 0] / np.exp(-0.1)

    sol = sb.dense_solve(outer_ok, [1.0], [0.0, 1.0], "rk45", 1e-8, 1e-10)
    assert sol.ys[-1, 0] == pytest.approx(np.exp(-1.0), rel=1e-5)


def test_an_event_function_returning_a_vector_is_named():
    with pytest.raises(ValueError, match="must return one number g\\(t, y\\)"):
        sb.solve_to_event(lambda t, y: -y, [2.0, 1.0], 0.0, 5.0, lambda t, y: y - 1.0)


def test_numpy_callbacks_evaluate_the_dynamics_and_their_vjp():
    import tensorflow as tf

    w = tf.Variable([[0.5, -1.0], [2.0, 0.3]], dtype=tf.float64)
    cb = tfode.numpy_callbacks(lambda t, y: tf.matmul(y, w) * t, (3, 2))
    y = np.arange(6.0).reshape(3, 2)
    a = np.ones(6)
    np.testing.assert_allclose(cb.fun(2.0, y.ravel()), (2.0 * y @ w.numpy()).ravel())
    out = cb.vjp(2.0, y.ravel(), a)
    np.testing.assert_allclose(out[:6], cb.fun(2.0, y.ravel()))
    # a^T df/dy = t * a W^T; a^T df/dt = sum(y W); a^T df/dW = t * y^T a.
    np.testing.assert_allclose(out[6:12], (2.0 * np.ones((3, 2)) @ w.numpy().T).ravel())
    assert out[12] == pytest.approx(float(np.sum(y @ w.numpy())))
    np.testing.assert_allclose(out[13:], (2.0 * y.T @ np.ones((3, 2))).ravel())
