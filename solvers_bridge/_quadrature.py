"""The dense adjoints: stable gradients through stiff dynamics.

The backsolve adjoint (:mod:`solvers_bridge._adjoint`, the paper's) rebuilds ``y`` by
integrating it backward together with ``a``; on stiff or contracting dynamics that
backward integration is unstable. The adjoints here keep what they need of the forward
solution instead:

* :func:`quadrature_adjoint`: the forward pass keeps a dense solution ``y(t)`` (SciPy
  ``solve_ivp`` with ``dense_output=True``: the interpolants of LSODA, BDF or Radau
  themselves; for VODE's implicit Adams, which has no dense output, its steps are
  recorded with their derivatives and interpolated by cubic Hermite polynomials);
  only the ``n``-dimensional adjoint ``da/dt = -(df/dy)^T a`` is integrated
  backward, with the same kind of stiff solver and the Jacobian
  ``-(df/dy)^T`` when one is given; ``dL/dtheta = integral of a^T df/dtheta dt`` is
  computed by Gauss-Legendre quadrature on every backward step from the backward
  solver's own dense output, so the parameters never enter the stiff system.
  Memory: the dense forward solution, O(steps).
* :func:`interpolating_adjoint`: ``[a, dL/dtheta]`` integrated backward together
  against the dense forward solution.
* :func:`checkpointed_adjoint`: only states at checkpoints are kept; each interval is
  re-solved forward densely, then handled as by the quadrature adjoint. Memory O(K).

Jacobians may be dense (``jac``) or per-sample blocks (``jac_blocks``, see
:mod:`solvers_bridge._banded`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from solvers_bridge._adjoint import AdjointResult
from solvers_bridge._banded import block_layout
from solvers_bridge._errors import SolverError
from solvers_bridge._info import SolveInfo
from solvers_bridge._methods import _DynamicsFailed, _raise_callback_error, _Rhs
from solvers_bridge._solve import DEFAULT_ATOL, DEFAULT_RTOL, check_state, check_times

#: Methods with a dense output, by their registry-style names -> solve_ivp's names
#: (``adams``: VODE's implicit Adams, its steps recorded and Hermite-interpolated).
DENSE_METHODS = {"lsoda": "LSODA", "bdf": "BDF", "radau": "Radau", "rk45": "RK45",
                 "dop853": "DOP853", "adams": "VODE_ADAMS"}
#: Methods that use a Jacobian.
_JACOBIAN_METHODS = {"LSODA", "BDF", "Radau"}


def _ivp_method(method: str) -> str:
    if method not in DENSE_METHODS:
        raise ValueError(
            f"The dense adjoints need a solver with a dense output; {method!r} has none "
            f"here. Use one of {', '.join(sorted(DENSE_METHODS))} (SciPy solve_ivp's "
            "methods: with this adjoint 'bdf' and 'lsoda' mean solve_ivp's BDF and LSODA).")
    return DENSE_METHODS[method]


def _jacobian(method: str, jac, jac_blocks, t0, y0, adjoint: bool = False):
    """``(jac, extra solve_ivp arguments)`` for ``method`` from a dense ``jac`` or from
    per-sample blocks (banded for LSODA, sparse for BDF and Radau); with ``adjoint``
    the Jacobian of the adjoint system, ``-J^T``, at ``y(t)`` (``y0`` is then a
    callable ``y(t)``)."""
    if method not in _JACOBIAN_METHODS:
        return None, {}
    y_at = y0 if adjoint else None
    if jac_blocks is not None:
        # One layout per block function and state size (cached), not per interval.
        layout = block_layout(jac_blocks, t0, y_at(t0) if adjoint else y0)
        if adjoint:
            def blocks(s, _):
                return -np.transpose(np.asarray(jac_blocks(s, y_at(s))), (0, 2, 1))
        else:
            blocks = jac_blocks
        if method == "LSODA":
            return ((lambda s, y: layout.banded(blocks(s, y))),
                    {"lband": layout.bandwidth, "uband": layout.bandwidth})
        return (lambda s, y: layout.sparse(blocks(s, y))), {}
    if jac is None:
        return None, {}
    if adjoint:
        return (lambda s, _: -np.asarray(jac(s, y_at(s))).T), {}
    return jac, {}


def _run_ivp(rhs: _Rhs, span, y0, method, rtol, atol, jac, t_eval, max_step, extra=None):
    kwargs = {"jac": jac} if jac is not None and method in _JACOBIAN_METHODS else {}
    kwargs.update(extra or {})
    if max_step is not None:
        kwargs["max_step"] = max_step
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "VODE_ADAMS":
                res = _vode_adams(rhs, span, y0, rtol, atol, t_eval, max_step)
            else:
                res = solve_ivp(rhs, span, y0, method=method, t_eval=t_eval,
                                dense_output=True, rtol=rtol, atol=atol, **kwargs)
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


class _HermiteSolution:
    """Piecewise cubic Hermite interpolation of recorded steps ``(ts, ys, fs)``:
    ``sol(t)`` like SciPy's ``OdeSolution``, ``ts`` the step times in the order taken."""

    def __init__(self, ts, ys, fs):
        from scipy.interpolate import CubicHermiteSpline

        self.ts = np.asarray(ts)
        order = np.argsort(self.ts)
        self._spline = CubicHermiteSpline(self.ts[order], np.asarray(ys)[order],
                                          np.asarray(fs)[order], axis=0)

    def __call__(self, t):
        out = self._spline(t)
        return out if np.ndim(t) == 0 else out.T


def _vode_adams(rhs: _Rhs, span, y0, rtol, atol, t_eval, max_step):
    """VODE's implicit Adams one step at a time, every accepted step recorded with its
    derivative (one more evaluation per step), the dense output by Hermite
    interpolation between steps. Returns a ``solve_ivp``-like result."""
    from types import SimpleNamespace

    from scipy.integrate import ode

    t0, t1 = float(span[0]), float(span[1])
    kwargs = {"max_step": max_step} if max_step is not None else {}
    r = ode(rhs).set_integrator("vode", method="adams", rtol=rtol, atol=atol, nsteps=10 ** 6,
                                **kwargs)
    r.set_initial_value(y0, t0)
    ts, ys, fs = [t0], [np.array(y0, dtype=np.float64)], [rhs(t0, np.array(y0, np.float64))]
    direction = np.sign(t1 - t0)
    status, message = 0, "success"
    while (t1 - r.t) * direction > 0:
        y = r.integrate(t1, step=True)
        if not r.successful() or rhs.error is not None:
            status, message = -1, f"VODE return code {r.get_return_code()}"
            break
        ts.append(float(r.t))
        ys.append(np.array(y))
        fs.append(rhs(float(r.t), np.array(y)))
    sol = _HermiteSolution(ts, ys, fs)
    if status == 0 and (ts[-1] - t1) * direction > 0:
        # The last step overshot t1: the span's steps end at t1 (the interpolant
        # still covers the overshoot).
        sol.ts = np.append(sol.ts[:-1], t1)
    times = np.asarray([t1] if t_eval is None else t_eval, dtype=np.float64)
    if status != 0:
        times = np.asarray([ts[-1]])
    return SimpleNamespace(t=times, y=np.atleast_2d(sol(times)).reshape(len(y0), -1),
                           sol=sol, njev=0, status=status, message=message)


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
                jac_blocks: Callable | None = None,
                max_step: float | None = None) -> DenseSolution:
    """Integrates like :func:`solve` but keeps the dense solution.

    Args:
        fun: ``fun(t, y) -> dy/dt`` on 1-D float64 arrays.
        y0: Initial state at ``t[0]``.
        t: Output times, strictly monotonic.
        method: ``bdf``, ``lsoda``, ``radau`` (stiff; they use ``jac``), ``rk45``
            or ``dop853`` (SciPy ``solve_ivp``), or ``adams`` (VODE's implicit Adams,
            steps recorded and Hermite-interpolated).
        rtol, atol: Tolerances.
        jac: Optional dense Jacobian ``jac(t, y) -> (n, n)``; without it (and
            without ``jac_blocks``) the stiff methods form finite-difference ones.
        jac_blocks: Optional per-sample Jacobian blocks ``(t, y) -> (B, d, d)`` of a
            state of ``B`` independent samples laid out sample by sample: handed to
            LSODA as a banded matrix and to BDF and Radau as a sparse one.
        max_step: Optional largest step.

    Returns:
        A :class:`DenseSolution`.
    """
    t = check_times(t)
    y0 = check_state(y0)
    ivp = _ivp_method(method)
    rhs = _Rhs(fun, y0.size, raise_through=True)
    jac, extra = _jacobian(ivp, jac, jac_blocks, float(t[0]), y0)
    res, info = _run_ivp(rhs, (t[0], t[-1]), y0, ivp, rtol, atol, jac, t, max_step, extra)
    info.nintervals = t.size - 1
    return DenseSolution(res.y.T.copy(), res.sol, info)


def quadrature_adjoint(vjp: Callable, t, forward: DenseSolution, grad_ys, n_params: int, *,
                       method: str = "bdf", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                       jac: Callable | None = None, jac_blocks: Callable | None = None,
                       fun: Callable | None = None, nodes: int = 4,
                       time_gradients: bool = True,
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
        jac_blocks: Optional per-sample Jacobian blocks (see :func:`dense_solve`);
            the adjoint's are ``-blocks^T``, banded or sparse likewise.
        fun: ``fun(t, y)``, for the time gradients (default: from ``vjp``).
        nodes: Gauss-Legendre nodes per backward step.
        time_gradients: Compute ``dL/dt`` (one ``fun`` evaluation per output time).
        max_step: Optional largest backward step.

    Returns:
        An :class:`AdjointResult`; its ``info`` counts every VJP (the adjoint's
        evaluations and the quadrature's) as ``nfev``.
    """
    return _backward(vjp, t, forward.ys, grad_ys, n_params, lambda i: forward.sol,
                     method=method, rtol=rtol, atol=atol, jac=jac, jac_blocks=jac_blocks,
                     fun=fun, nodes=nodes, time_gradients=time_gradients, max_step=max_step,
                     with_params=False)


def interpolating_adjoint(vjp: Callable, t, forward: DenseSolution, grad_ys, n_params: int, *,
                          method: str = "bdf", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                          fun: Callable | None = None, time_gradients: bool = True,
                          max_step: float | None = None) -> AdjointResult:
    """Gradients by the interpolating adjoint: ``[a, dL/dtheta]`` integrated backward
    together against the dense forward solution (no quadrature). The stiff methods
    then form finite-difference Jacobians of that ``n + P`` system (``n + P`` VJPs
    each): prefer :func:`quadrature_adjoint` when ``P`` is large. Arguments as there."""
    return _backward(vjp, t, forward.ys, grad_ys, n_params, lambda i: forward.sol,
                     method=method, rtol=rtol, atol=atol, jac=None, jac_blocks=None, fun=fun,
                     nodes=0, time_gradients=time_gradients, max_step=max_step,
                     with_params=True)


def checkpoint_grid(t, checkpoints: int) -> tuple[np.ndarray, np.ndarray]:
    """The output times with ``checkpoints`` equally spaced extra times added between
    ``t[0]`` and ``t[-1]``: ``(grid, index)`` with ``grid[index] == t``."""
    t = check_times(t)
    extra = np.linspace(t[0], t[-1], int(checkpoints) + 2)[1:-1]
    grid = np.unique(np.concatenate([t, extra]))
    if t[-1] < t[0]:
        grid = grid[::-1]
    index = np.searchsorted(grid, t) if t[-1] > t[0] else grid.size - 1 - np.searchsorted(
        grid[::-1], t)
    return grid, index


def checkpointed_adjoint(fun: Callable, vjp: Callable, grid, ys, grad_ys, n_params: int, *,
                         method: str = "bdf", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                         forward_rtol=None, forward_atol=None, jac: Callable | None = None,
                         jac_blocks: Callable | None = None, nodes: int = 4,
                         time_gradients: bool = True,
                         max_step: float | None = None) -> AdjointResult:
    """Gradients by the checkpointed quadrature adjoint: only the states at ``grid``
    (the output times plus checkpoints, see :func:`checkpoint_grid`) were kept; each
    interval is re-solved forward from its checkpoint with a dense output, then its
    adjoint and quadrature run as in :func:`quadrature_adjoint`. Memory: the
    checkpoints and one interval's dense solution. ``grad_ys`` is zero at the
    checkpoints that are not output times. The re-solves count in ``info.nfev``."""
    grid = check_times(grid)
    ys = np.asarray(ys, dtype=np.float64)
    resolved = {"nfev": 0}

    def interval_solution(i):
        dense = dense_solve(fun, ys[i - 1], grid[i - 1:i + 1], method,
                            rtol if forward_rtol is None else forward_rtol,
                            atol if forward_atol is None else forward_atol, jac=jac,
                            jac_blocks=jac_blocks, max_step=max_step)
        resolved["nfev"] += dense.info.nfev
        return dense.sol

    res = _backward(vjp, grid, ys, grad_ys, n_params, interval_solution, method=method,
                    rtol=rtol, atol=atol, jac=jac, jac_blocks=jac_blocks, fun=fun, nodes=nodes,
                    time_gradients=time_gradients, max_step=max_step, with_params=False)
    res.info.nfev += resolved["nfev"]
    return res


def _backward(vjp, t, ys, grad_ys, n_params, interval_solution, *, method, rtol, atol, jac,
              jac_blocks, fun, nodes, time_gradients, max_step, with_params):
    """The backward loop shared by the dense adjoints: interval by interval from the
    last output time, ``a`` (and with ``with_params`` also ``dL/dtheta``) integrated
    against ``y = interval_solution(i)`` on ``[t[i-1], t[i]]``, the parameter gradient
    otherwise by Gauss-Legendre quadrature on every backward step."""
    t = check_times(t)
    grad_ys = np.asarray(grad_ys, dtype=np.float64)
    if grad_ys.shape != ys.shape:
        raise ValueError(f"grad_ys must have the shape of ys {ys.shape}; got {grad_ys.shape}.")
    n = ys.shape[1]
    ivp = _ivp_method(method)
    x, w = np.polynomial.legendre.leggauss(max(int(nodes), 1))
    counter = {"vjp": 0}
    current = {"y": None}

    def call_vjp(s, a):
        counter["vjp"] += 1
        return np.asarray(vjp(s, current["y"](s), a))

    if with_params:
        def adj_rhs(s, state):
            out = call_vjp(s, state[:n])
            return -np.concatenate([out[n:2 * n], out[2 * n + 1:]])
    else:
        def adj_rhs(s, a):
            return -call_vjp(s, a)[n:2 * n]

    def y_now(s):
        return current["y"](s)

    if fun is None:
        zeros = np.zeros(n)

        def fun(s, y):
            return np.asarray(vjp(s, y, zeros))[:n]

    info = SolveInfo(method=ivp.lower(), t_reached=float(t[-1]), nintervals=0)
    grad_params = np.zeros(n_params)
    grad_t = np.zeros(t.size)
    state = np.concatenate([grad_ys[-1], grad_params]) if with_params else grad_ys[-1].copy()
    for i in range(t.size - 1, 0, -1):
        if time_gradients:
            grad_t[i] = float(np.dot(grad_ys[i], fun(float(t[i]), ys[i])))
        current["y"] = interval_solution(i)
        adj_jac, extra = ((None, {}) if with_params else
                          _jacobian(ivp, jac, jac_blocks, float(t[i]), y_now, adjoint=True))
        rhs = _Rhs(adj_rhs, state.size, raise_through=True)
        try:
            res, step_info = _run_ivp(rhs, (t[i], t[i - 1]), state, ivp, rtol, atol, adj_jac,
                                      None, max_step, extra)
        except SolverError as err:
            err.args = (f"{err.args[0]} (during the adjoint's backward pass, from "
                        f"t={float(t[i])!r} to t={float(t[i - 1])!r})",)
            raise
        info.add(step_info)
        if not with_params:
            ts = res.sol.ts
            for lo, hi in zip(ts[:-1], ts[1:]):
                half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
                for xk, wk in zip(x, w):
                    s = mid + half * xk
                    grad_params += abs(half) * wk * call_vjp(s, res.sol(s))[2 * n + 1:]
        state = res.y[:, -1].copy()
        state[:n] += grad_ys[i - 1]
    a = state[:n]
    if with_params:
        grad_params = state[n:]
    if time_gradients:
        # dL/dt0 = -a(t0)^T f(t0, y0), a(t0) without the cotangent of y(t0) itself.
        grad_t[0] = -float(np.dot(a - grad_ys[0], fun(float(t[0]), ys[0])))
    # Every VJP (adjoint right-hand side and quadrature nodes) and the time gradients'
    # evaluations of f.
    info.nfev = counter["vjp"] + (t.size if time_gradients else 0)
    return AdjointResult(grad_y0=a.copy(), grad_params=np.array(grad_params), grad_t=grad_t,
                         info=info)
