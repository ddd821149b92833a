"""``solve``: integrate an ODE at requested times with a registered method."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from solvers_bridge._dense import DenseSolution
from solvers_bridge._info import SolveInfo
from solvers_bridge._methods import get_method

DEFAULT_RTOL = 1e-7
DEFAULT_ATOL = 1e-9


def check_times(t) -> np.ndarray:
    """Returns ``t`` as a 1-D float64 array after checking it is finite and strictly
    monotonic (increasing or decreasing).

    Raises:
        ValueError: naming the offending values and the fix.
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t must be a non-empty 1-D array of times; got shape {t.shape}.")
    if not np.isfinite(t).all():
        raise ValueError(f"t must be finite; got {t.tolist()}.")
    if t.size > 1:
        d = np.diff(t)
        if not ((d > 0).all() or (d < 0).all()):
            i = int(np.flatnonzero(d * np.sign(t[-1] - t[0]) <= 0)[0]) if t[-1] != t[0] else 0
            raise ValueError(
                f"t must be strictly increasing or strictly decreasing; got t[{i}]={float(t[i])!r} "
                f"followed by t[{i + 1}]={float(t[i + 1])!r} in {t.tolist()}. Sort the times and "
                "drop duplicates."
            )
    return t


def check_state(y0, name: str = "y0") -> np.ndarray:
    """Returns ``y0`` as a 1-D float64 array after checking it is real and finite."""
    arr = np.asarray(y0)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real floating-point array; got dtype {arr.dtype}.")
    arr = np.array(arr, dtype=np.float64, copy=True)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (flatten it first); got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values at indices "
                         f"{np.flatnonzero(~np.isfinite(arr))[:10].tolist()}.")
    return arr


def check_tolerance(tol, n: int, name: str):
    """Returns a tolerance as a float or a float64 array of length ``n``."""
    arr = np.asarray(tol, dtype=np.float64)
    if arr.ndim == 0:
        value = float(arr)
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative finite number; got {tol!r}.")
        return value
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have one entry per state component "
                         f"(shape ({n},)); got shape {arr.shape}.")
    if not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError(f"{name} must be non-negative and finite in every component.")
    return arr


def solve(fun: Callable[[float, np.ndarray], np.ndarray], y0, t, method: str = "lsoda",
          rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, *, jac: Callable | None = None,
          jac_blocks: Callable | None = None, **options) -> tuple[np.ndarray, SolveInfo]:
    """Integrates ``dy/dt = fun(t, y)`` and returns the states at every time in ``t``.

    Args:
        fun: Right-hand side ``fun(t, y) -> dy/dt`` on 1-D float64 arrays. It gets a
            copy of the solver's buffer and may keep it.
        y0: Initial state at ``t[0]``, 1-D.
        t: Output times, strictly increasing or strictly decreasing; ``t[0]`` is the
            initial time.
        method: A name in :data:`METHODS`: ``lsoda``, ``adams`` (VODE implicit Adams,
            the paper's), ``bdf`` (VODE BDF), ``odeint`` (``scipy.integrate.odeint``),
            ``dopri5``, ``dop853``, ``radau``, ``rk45``, ``rk23``.
        rtol: Relative tolerance, scalar or one per component.
        atol: Absolute tolerance, scalar or one per component.
        jac: For ``lsoda``, ``bdf``, ``odeint`` and ``radau``: ``jac(t, y)`` returning
            the dense Jacobian ``(n, n)``, or (not ``radau``) the banded one
            ``(lband + uband + 1, n)`` with ``jac[i - j + uband, j] = df_i/dy_j`` when
            ``lband``/``uband`` are given.
        jac_blocks: For the same methods, instead of ``jac``: the Jacobian blocks
            ``(t, y) -> (B, d, d)`` of a state of ``B`` independent samples laid out
            sample by sample, handed to the solver as a band (ODEPACK, VODE) or a
            sparse matrix (``radau``), never as a dense ``n x n`` matrix.
        **options: ``max_steps`` (per output interval, default 10,000),
            ``first_step``, ``max_step``, ``min_step``, ``lband``, ``uband``,
            ``order``, ``max_order_ns``, ``max_order_s`` where the method has them,
            and ``max_fd_jacobian_size`` (default 1000): the largest state on which a
            dense finite-difference Jacobian may be formed.

    Returns:
        ``(ys, info)``: ``ys`` of shape ``(len(t), len(y0))`` and a
        :class:`SolveInfo`.

    Raises:
        ValueError, TypeError: bad input, with the problem and the fix.
        SolverError: the solver failed (too many steps, step size underflow, a
            large dense finite-difference Jacobian); it carries the states reached.
        NestedSolveError: a nested solve of the same integrator.
        Exception: an exception raised by ``fun`` is re-raised as it was, with a
            note giving the time and method.
    """
    solver, y0, t = _prepare(fun, y0, t, method, rtol, atol, jac, jac_blocks, options)
    return solver.run(fun, y0, t)


def dense_solve(fun: Callable, y0, t, method: str = "lsoda", rtol=DEFAULT_RTOL,
                atol=DEFAULT_ATOL, *, jac: Callable | None = None,
                jac_blocks: Callable | None = None, **options) -> DenseSolution:
    """Integrates like :func:`solve` and keeps the dense solution.

    The same integrator as :func:`solve` with the same ``method`` name, stepped one
    accepted step at a time; each step's interpolant is the integrator's own where
    SciPy exposes it (LSODA, Radau, RK45, RK23), else cubic Hermite from the states
    and derivatives at the step ends (VODE, DOPRI; one more evaluation per step).

    Returns:
        A :class:`DenseSolution`: ``sol(t)`` anywhere in the span, ``sol.ys`` at the
        output times, ``sol.info``, and ``sol.table`` (one row per step).
    """
    solver, y0, t = _prepare(fun, y0, t, method, rtol, atol, jac, jac_blocks, options)
    return solver.run_dense(fun, y0, t)


def solve_to_event(fun: Callable, y0, t0: float, t_max: float, event: Callable,
                   method: str = "lsoda", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, *,
                   direction: float = 0.0, terminal: bool = True,
                   jac: Callable | None = None, jac_blocks: Callable | None = None,
                   **options) -> DenseSolution:
    """Integrates from ``t0`` towards ``t_max`` until ``event(t, y)`` crosses zero.

    The crossing is located on the dense output of the integrator that took the
    step (Brent's method on ``event(t, sol(t))``), so the returned state lies on the
    event surface to root-finding precision.

    Args:
        event: ``event(t, y) -> float``; counted, and checked to return one finite
            number.
        direction: Only crossings with this sign of slope count (0: any).
        terminal: Stop at the first crossing (the solution then ends there);
            ``False``: every crossing before ``t_max``.
        Others: as for :func:`solve`.

    Returns:
        A :class:`DenseSolution` with ``t_events`` ``(K,)`` and ``y_events``
        ``(K, n)``; ``sol.info.nfev`` counts the dynamics' evaluations.
    """
    if not callable(event):
        raise TypeError(f"event must be callable as event(t, y); got {type(event).__name__}.")
    solver, y0, t = _prepare(fun, y0, [t0, t_max], method, rtol, atol, jac, jac_blocks,
                             options)
    return solver.run_dense(fun, y0, t, event, terminal=terminal, direction=direction)


def _prepare(fun, y0, t, method, rtol, atol, jac, jac_blocks, options):
    cls = get_method(method)
    y0 = check_state(y0)
    t = check_times(t)
    rtol = check_tolerance(rtol, y0.size, "rtol")
    atol = check_tolerance(atol, y0.size, "atol")
    if not callable(fun):
        raise TypeError(f"fun must be callable as fun(t, y); got {type(fun).__name__}.")
    return cls(rtol, atol, jac, jac_blocks=jac_blocks, **options), y0, t
