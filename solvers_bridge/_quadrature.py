"""The quadrature adjoint: stable gradients through stiff dynamics.

The backsolve adjoint (:mod:`solvers_bridge._adjoint`, the paper's) rebuilds ``y`` by
integrating it backward together with ``a``; on stiff or contracting dynamics that
backward integration is unstable. Here instead:

1. the forward pass keeps a dense solution ``y(t)`` (SciPy ``solve_ivp`` with
   ``dense_output=True``: the interpolants of LSODA, BDF or Radau themselves);
2. only the ``n``-dimensional adjoint ``da/dt = -(df/dy)^T a`` is integrated backward,
   with the same kind of stiff solver and the Jacobian ``-(df/dy)^T`` when one is
   given, against the stored ``y(t)``;
3. ``dL/dtheta = integral of a^T df/dtheta dt`` is computed by Gauss-Legendre
   quadrature on every backward step, from the backward solver's own dense output,
   so the parameters never enter the stiff system.

Memory is that of the dense forward solution (O(steps)), not O(1) as for backsolve.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from solvers_bridge._adjoint import AdjointResult
from solvers_bridge._errors import SolverError
from solvers_bridge._info import SolveInfo
from solvers_bridge._methods import _DynamicsFailed, _raise_callback_error, _Rhs
from solvers_bridge._solve import DEFAULT_ATOL, DEFAULT_RTOL, check_state, check_times

#: Methods with a dense output, by their registry-style names -> solve_ivp's names.
DENSE_METHODS = {"lsoda": "LSODA", "bdf": "BDF", "radau": "Radau", "rk45": "RK45",
                 "dop853": "DOP853"}
#: Methods that use a Jacobian.
_JACOBIAN_METHODS = {"LSODA", "BDF", "Radau"}


def _ivp_method(method: str) -> str:
    if method not in DENSE_METHODS:
        raise ValueError(
            f"The quadrature adjoint needs a solver with a dense output; {method!r} has none "
            f"here. Use one of {', '.join(sorted(DENSE_METHODS))} (SciPy solve_ivp's "
            "methods: with this adjoint 'bdf' and 'lsoda' mean solve_ivp's BDF and LSODA).")
    return DENSE_METHODS[method]


def _run_ivp(rhs: _Rhs, span, y0, method, rtol, atol, jac, t_eval, max_step):
    kwargs = {"jac": jac} if jac is not None and method in _JACOBIAN_METHODS else {}
    if max_step is not None:
        kwargs["max_step"] = max_step
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = solve_ivp(rhs, span, y0, method=method, t_eval=t_eval, dense_output=True,
                            rtol=rtol, atol=atol, **kwargs)
    except _DynamicsFailed:
        res = None
    info = SolveInfo(method=method.lower(), nfev=rhs.nfev,
                     njev=0 if res is None else int(res.njev),
                     nsteps=0 if res is None or res.sol is None else len(res.sol.ts) - 1,
                     t_reached=float(span[0]) if res is None else float(res.t[-1])
                     if res.t.size else float(span[0]))
    if rhs.error is not None:
        _raise_callback_error(rhs.error, method.lower(), rhs.error_t,
                              np.empty((0, len(y0))), info)
    if res.status != 0:
        info.success, info.status, info.message = False, int(res.status), str(res.message)
        raise SolverError(
            f"The '{method}' solver failed while integrating from t={span[0]!r} towards "
            f"t={span[1]!r}: {res.message} Loosen rtol/atol or check the dynamics.",
            method=method.lower(), t=info.t_reached, step=None, solver_message=str(res.message),
            info=info, ys=None)
    return res, info


class DenseSolution:
    """A forward solution kept for the quadrature adjoint.

    Attributes:
        ys: The states at the output times, ``(len(t), n)``.
        sol: ``sol(t) -> y(t)`` anywhere in the span (SciPy's ``OdeSolution``).
        info: The forward :class:`SolveInfo`.
    """

    def __init__(self, ys, sol, info):
        self.ys, self.sol, self.info = ys, sol, info


def dense_solve(fun: Callable, y0, t, method: str = "bdf", rtol=DEFAULT_RTOL,
                atol=DEFAULT_ATOL, *, jac: Callable | None = None,
                max_step: float | None = None) -> DenseSolution:
    """Integrates like :func:`solve` but keeps the dense solution.

    Args:
        fun: ``fun(t, y) -> dy/dt`` on 1-D float64 arrays.
        y0: Initial state at ``t[0]``.
        t: Output times, strictly monotonic.
        method: ``bdf``, ``lsoda``, ``radau`` (stiff; they use ``jac``), ``rk45``
            or ``dop853`` (SciPy ``solve_ivp``).
        rtol, atol: Tolerances.
        jac: Optional dense Jacobian ``jac(t, y) -> (n, n)``; without it the stiff
            methods form finite-difference ones.
        max_step: Optional largest step.

    Returns:
        A :class:`DenseSolution`.
    """
    t = check_times(t)
    y0 = check_state(y0)
    ivp = _ivp_method(method)
    rhs = _Rhs(fun, y0.size, raise_through=True)
    res, info = _run_ivp(rhs, (t[0], t[-1]), y0, ivp, rtol, atol, jac, t, max_step)
    info.nintervals = t.size - 1
    return DenseSolution(res.y.T.copy(), res.sol, info)


def quadrature_adjoint(vjp: Callable, t, forward: DenseSolution, grad_ys, n_params: int, *,
                       method: str = "bdf", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                       jac: Callable | None = None, fun: Callable | None = None,
                       nodes: int = 4, time_gradients: bool = True,
                       max_step: float | None = None) -> AdjointResult:
    """Gradients by the quadrature adjoint (see the module docstring).

    Args:
        vjp: ``vjp(t, y, a) -> [f, a^T df/dy, a^T df/dt, a^T df/dtheta]`` (flat).
        t: The forward output times.
        forward: The :class:`DenseSolution` of the forward pass.
        grad_ys: Cotangents ``dL/dy(t_i)``, ``(len(t), n)``.
        n_params: Number of parameters.
        method: Backward method (as for :func:`dense_solve`; ``bdf`` by default).
        rtol, atol: Backward tolerances of ``a``.
        jac: Optional forward Jacobian ``jac(t, y) -> (n, n)``; the backward system's
            is ``-jac^T`` at ``y(t)``. Without it the stiff methods form finite-difference
            Jacobians of the adjoint system (``n`` extra VJPs each).
        fun: ``fun(t, y)``, for the time gradients (default: from ``vjp``).
        nodes: Gauss-Legendre nodes per backward step.
        time_gradients: Compute ``dL/dt`` (one ``fun`` evaluation per output time).
        max_step: Optional largest backward step.

    Returns:
        An :class:`AdjointResult`; its ``info`` counts every VJP (the adjoint's
        evaluations and the quadrature's) as ``nfev``.
    """
    t = check_times(t)
    ys = forward.ys
    grad_ys = np.asarray(grad_ys, dtype=np.float64)
    if grad_ys.shape != ys.shape:
        raise ValueError(f"grad_ys must have the shape of ys {ys.shape}; got {grad_ys.shape}.")
    n = ys.shape[1]
    ivp = _ivp_method(method)
    y_of = forward.sol
    x, w = np.polynomial.legendre.leggauss(int(nodes))
    counter = {"vjp": 0}

    def call_vjp(s, a):
        counter["vjp"] += 1
        return np.asarray(vjp(s, y_of(s), a))

    def adj_rhs(s, a):
        return -call_vjp(s, a)[n:2 * n]

    adj_jac = None
    if jac is not None:
        def adj_jac(s, a):
            return -np.asarray(jac(s, y_of(s))).T

    if fun is None:
        zeros = np.zeros(n)

        def fun(s, y):
            return np.asarray(vjp(s, y, zeros))[:n]

    info = SolveInfo(method=ivp.lower(), t_reached=float(t[-1]), nintervals=0)
    grad_params = np.zeros(n_params)
    grad_t = np.zeros(t.size)
    a = grad_ys[-1].copy()
    for i in range(t.size - 1, 0, -1):
        if time_gradients:
            grad_t[i] = float(np.dot(grad_ys[i], fun(float(t[i]), ys[i])))
        rhs = _Rhs(adj_rhs, n, raise_through=True)
        try:
            res, step_info = _run_ivp(rhs, (t[i], t[i - 1]), a, ivp, rtol, atol, adj_jac, None,
                                      max_step)
        except SolverError as err:
            err.args = (f"{err.args[0]} (during the quadrature adjoint's backward pass, from "
                        f"t={float(t[i])!r} to t={float(t[i - 1])!r})",)
            raise
        info.add(step_info)
        ts = res.sol.ts
        for lo, hi in zip(ts[:-1], ts[1:]):
            half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
            for xk, wk in zip(x, w):
                s = mid + half * xk
                grad_params += abs(half) * wk * call_vjp(s, res.sol(s))[2 * n + 1:]
        a = res.y[:, -1] + grad_ys[i - 1]
    if time_gradients:
        # dL/dt0 = -a(t0)^T f(t0, y0), a(t0) without the cotangent of y(t0) itself.
        grad_t[0] = -float(np.dot(a - grad_ys[0], fun(float(t[0]), ys[0])))
    # Every VJP (adjoint right-hand side and quadrature nodes) and the time gradients'
    # evaluations of f.
    info.nfev = counter["vjp"] + (t.size if time_gradients else 0)
    return AdjointResult(grad_y0=a, grad_params=grad_params, grad_t=grad_t, info=info)
