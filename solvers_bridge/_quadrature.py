"""The dense adjoints: stable gradients through stiff dynamics.

The backsolve adjoint (:mod:`solvers_bridge._adjoint`, the paper's) rebuilds ``y`` by
integrating it backward together with ``a``; on stiff or contracting dynamics that
backward integration is unstable. The adjoints here keep what they need of the forward
solution instead (a :class:`~solvers_bridge.DenseSolution` from
:func:`~solvers_bridge.dense_solve`, the forward method's own dense output):

* :func:`quadrature_adjoint`: only the ``n``-dimensional adjoint
  ``da/dt = -(df/dy)^T a`` is integrated backward, with the backward method and the
  Jacobian ``-(df/dy)^T`` when one is given; ``dL/dtheta = integral of a^T df/dtheta
  dt`` is computed by Gauss-Legendre quadrature on every backward step from the
  backward solver's own dense output, so the parameters never enter the stiff
  system. Memory: the dense forward solution, O(steps).
* :func:`interpolating_adjoint`: ``[a, dL/dtheta]`` integrated backward together
  against the dense forward solution.
* :func:`checkpointed_adjoint`: only states at checkpoints are kept; each interval is
  re-solved forward densely, then handled as by the quadrature adjoint. Memory O(K).

Jacobians may be dense (``jac``) or per-sample blocks (``jac_blocks``, see
:mod:`solvers_bridge._banded`); every backward solve goes through the registry like
any other (counted evaluations, step budget, nesting guard).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from solvers_bridge._adjoint import AdjointResult
from solvers_bridge._dense import DenseSolution
from solvers_bridge._errors import SolverError
from solvers_bridge._info import SolveInfo
from solvers_bridge._solve import DEFAULT_ATOL, DEFAULT_RTOL, check_times, dense_solve


def _adjoint_jacobians(jac, jac_blocks, y_at):
    """The Jacobian of the adjoint system ``-J^T`` at ``y(t)``, dense or in blocks."""
    if jac_blocks is not None:
        def blocks(s, _):
            return -np.transpose(np.asarray(jac_blocks(s, y_at(s))), (0, 2, 1))

        shape = getattr(jac_blocks, "block_shape", None)
        if shape is not None:
            blocks.block_shape = shape
        return None, blocks
    if jac is not None:
        return (lambda s, _: -np.asarray(jac(s, y_at(s))).T), None
    return None, None


def quadrature_adjoint(vjp: Callable, t, forward: DenseSolution, grad_ys, n_params: int, *,
                       method: str = "lsoda", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                       jac: Callable | None = None, jac_blocks: Callable | None = None,
                       fun: Callable | None = None, nodes: int = 4,
                       time_gradients: bool = True, **options) -> AdjointResult:
    """Gradients by the quadrature adjoint (see the module docstring).

    Args:
        vjp: ``vjp(t, y, a) -> [f, a^T df/dy, a^T df/dt, a^T df/dtheta]`` (flat).
        t: The forward output times.
        forward: The :class:`DenseSolution` of the forward pass (its ``ys`` at ``t``).
        grad_ys: Cotangents ``dL/dy(t_i)``, ``(len(t), n)``.
        n_params: Number of parameters.
        method: Backward method (any name in the registry).
        rtol, atol: Backward tolerances of ``a``.
        jac: Optional forward Jacobian ``jac(t, y) -> (n, n)``; the backward system's
            is ``-jac^T`` at ``y(t)``. Without it the stiff methods form finite-difference
            Jacobians of the adjoint system (``n`` extra VJPs each).
        jac_blocks: Optional per-sample Jacobian blocks; the adjoint's are
            ``-blocks^T``, banded or sparse likewise.
        fun: ``fun(t, y)``, for the time gradients (default: from ``vjp``).
        nodes: Gauss-Legendre nodes per backward step.
        time_gradients: Compute ``dL/dt`` (one ``fun`` evaluation per output time).
        **options: Backward solver options (``max_steps``, ``max_step``, ...).

    Returns:
        An :class:`AdjointResult`; its ``info`` counts every VJP (the adjoint's
        evaluations and the quadrature's) as ``nfev``.
    """
    return _backward(vjp, t, forward.ys, grad_ys, n_params, lambda i: forward, method=method,
                     rtol=rtol, atol=atol, jac=jac, jac_blocks=jac_blocks, fun=fun,
                     nodes=nodes, time_gradients=time_gradients, with_params=False,
                     options=options)


def interpolating_adjoint(vjp: Callable, t, forward: DenseSolution, grad_ys, n_params: int, *,
                          method: str = "lsoda", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                          fun: Callable | None = None, time_gradients: bool = True,
                          **options) -> AdjointResult:
    """Gradients by the interpolating adjoint: ``[a, dL/dtheta]`` integrated backward
    together against the dense forward solution (no quadrature). The stiff methods
    then form finite-difference Jacobians of that ``n + P`` system (``n + P`` VJPs
    each): prefer :func:`quadrature_adjoint` when ``P`` is large. Arguments as there."""
    return _backward(vjp, t, forward.ys, grad_ys, n_params, lambda i: forward, method=method,
                     rtol=rtol, atol=atol, jac=None, jac_blocks=None, fun=fun, nodes=0,
                     time_gradients=time_gradients, with_params=True, options=options)


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
                         method: str = "lsoda", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                         forward_method: str | None = None, forward_rtol=None,
                         forward_atol=None, forward_options: dict | None = None,
                         jac: Callable | None = None, jac_blocks: Callable | None = None,
                         nodes: int = 4, time_gradients: bool = True,
                         **options) -> AdjointResult:
    """Gradients by the checkpointed quadrature adjoint: only the states at ``grid``
    (the output times plus checkpoints, see :func:`checkpoint_grid`) were kept; each
    interval is re-solved forward from its checkpoint with a dense output (with the
    forward method, tolerances and options: by default the backward ones), then its
    adjoint and quadrature run as in :func:`quadrature_adjoint`. Memory: the
    checkpoints and one interval's dense solution. ``grad_ys`` is zero at the
    checkpoints that are not output times. The re-solves count in ``info.nfev``."""
    grid = check_times(grid)
    ys = np.asarray(ys, dtype=np.float64)
    resolved = {"nfev": 0}

    def interval_solution(i):
        dense = dense_solve(fun, ys[i - 1], grid[i - 1:i + 1], forward_method or method,
                            rtol if forward_rtol is None else forward_rtol,
                            atol if forward_atol is None else forward_atol, jac=jac,
                            jac_blocks=jac_blocks,
                            **(options if forward_options is None else forward_options))
        resolved["nfev"] += dense.info.nfev
        return dense

    res = _backward(vjp, grid, ys, grad_ys, n_params, interval_solution, method=method,
                    rtol=rtol, atol=atol, jac=jac, jac_blocks=jac_blocks, fun=fun, nodes=nodes,
                    time_gradients=time_gradients, with_params=False, options=options)
    res.info.nfev += resolved["nfev"]
    return res


def _backward(vjp, t, ys, grad_ys, n_params, interval_solution, *, method, rtol, atol, jac,
              jac_blocks, fun, nodes, time_gradients, with_params, options):
    """The backward loop shared by the dense adjoints: interval by interval from the
    last output time, ``a`` (and with ``with_params`` also ``dL/dtheta``) integrated
    against ``y = interval_solution(i)`` on ``[t[i-1], t[i]]``, the parameter gradient
    otherwise by Gauss-Legendre quadrature on every backward step."""
    t = check_times(t)
    ys = np.asarray(ys, dtype=np.float64)
    grad_ys = np.asarray(grad_ys, dtype=np.float64)
    if grad_ys.shape != ys.shape:
        raise ValueError(f"grad_ys must have the shape of ys {ys.shape}; got {grad_ys.shape}.")
    n = ys.shape[1]
    x, w = np.polynomial.legendre.leggauss(max(int(nodes), 1))
    counter = {"vjp": 0}
    current = {"y": None}

    def y_now(s):
        return current["y"](s)

    def call_vjp(s, a):
        counter["vjp"] += 1
        return np.asarray(vjp(s, current["y"](s), a))

    if with_params:
        def adj_rhs(s, state):
            out = call_vjp(s, state[:n])
            return -np.concatenate([out[n:2 * n], out[2 * n + 1:]])
        adj_jac, adj_blocks = None, None
    else:
        def adj_rhs(s, a):
            return -call_vjp(s, a)[n:2 * n]
        adj_jac, adj_blocks = _adjoint_jacobians(jac, jac_blocks, y_now)

    if fun is None:
        zeros = np.zeros(n)

        def fun(s, y):
            return np.asarray(vjp(s, y, zeros))[:n]

    info = SolveInfo(method=method, t_reached=float(t[-1]), nintervals=0)
    grad_params = np.zeros(n_params)
    grad_t = np.zeros(t.size)
    state = np.concatenate([grad_ys[-1], grad_params]) if with_params else grad_ys[-1].copy()
    for i in range(t.size - 1, 0, -1):
        if time_gradients:
            grad_t[i] = float(np.dot(grad_ys[i], fun(float(t[i]), ys[i])))
        current["y"] = interval_solution(i)
        try:
            back = dense_solve(adj_rhs, state, [t[i], t[i - 1]], method, rtol, atol,
                               jac=adj_jac, jac_blocks=adj_blocks, **options)
        except SolverError as err:
            err.args = (f"{err.args[0]} (during the adjoint's backward pass, from "
                        f"t={float(t[i])!r} to t={float(t[i - 1])!r})",)
            raise
        info.add(back.info)
        if not with_params:
            ts = back.ts
            for lo, hi in zip(ts[:-1], ts[1:]):
                half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
                for xk, wk in zip(x, w):
                    s = mid + half * xk
                    grad_params += abs(half) * wk * call_vjp(s, back(s))[2 * n + 1:]
        state = back.ys[-1].copy()
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
