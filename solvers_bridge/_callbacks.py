"""The callbacks handed to SciPy (the hot path) and the guards around them.

* :class:`Rhs` counts calls, copies the solver's buffer before the user sees it,
  checks the returned shape and finiteness, and records (rather than lets SciPy
  swallow) an exception raised by the user's function.
* :class:`FdGuardedRhs` stops a dense finite-difference Jacobian on a large state.
* :class:`Jac` wraps a user Jacobian likewise; :class:`EventFn` an event function.
* :func:`reentrancy_guard` refuses a solve nested inside a callback of a solve of
  the same (non-reentrant) integrator.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import numpy as np
from scipy import sparse as _sparse

from solvers_bridge._errors import NestedSolveError, SolverError

_active = threading.local()


@contextlib.contextmanager
def reentrancy_guard(name: str, integrator: str | None):
    """Refuses a solve nested inside a callback of a solve of the same integrator
    (``integrator=None``: a reentrant, pure-Python one, never refused)."""
    if integrator is None:
        yield
        return
    active = getattr(_active, "integrators", None)
    if active is None:
        active = _active.integrators = []
    if integrator in active:
        raise NestedSolveError(
            f"A '{name}' solve was started inside the right-hand side of another "
            f"solve that uses the same integrator ({integrator}). That integrator "
            "is not reentrant: a nested solve corrupts the outer one (LSODA silently "
            "returns a wrong answer). Use a different method for the inner solve, e.g. "
            f"{_nesting_alternative(integrator)!r}.",
            method=name,
        )
    active.append(integrator)
    try:
        yield
    finally:
        active.pop()


def _nesting_alternative(integrator: str) -> str:
    return "dopri5" if integrator != "dopri5" else "adams"


class DynamicsFailed(Exception):
    """Internal: the user's function failed; the original error is in ``rhs.error``."""


class Rhs:
    """The counted, guarded right-hand side handed to SciPy (the hot path).

    Args:
        fun: ``fun(t, y) -> dy/dt`` on 1-D float64 arrays.
        n: State size.
        raise_through: Whether the integrator propagates a Python exception cleanly
            (LSODA and odeint do); otherwise the error is recorded and NaN returned
            so that the solver gives up, and the error is raised once it returns.
    """

    __slots__ = ("fun", "n", "nfev", "error", "error_t", "raise_through", "_nan")

    def __init__(self, fun: Callable, n: int, raise_through: bool):
        self.fun = fun
        self.n = n
        self.nfev = 0
        self.error: BaseException | None = None
        self.error_t: float | None = None
        self.raise_through = raise_through
        self._nan = np.full(n, np.nan)

    def __call__(self, t, y):
        if self.error is not None:
            # The solver keeps calling after a failure (VODE, DOPRI): answer cheaply.
            return self._nan
        self.nfev += 1
        try:
            out = self.fun(t, y.copy())
            if type(out) is not np.ndarray or out.dtype != np.float64:
                out = np.asarray(out, dtype=np.float64)
            if out.shape != (self.n,):
                raise ValueError(
                    f"The dynamics returned an array of shape {out.shape} at t={t!r}; "
                    f"expected shape ({self.n},), the shape of the state. Return "
                    "dy/dt with the same shape as y."
                )
            if not np.isfinite(out).all():
                bad = np.flatnonzero(~np.isfinite(out))
                raise FloatingPointError(
                    f"The dynamics returned non-finite values at t={t!r} (first at "
                    f"component {bad[0]} of {self.n}: {out[bad[0]]!r}). The state "
                    "may be blowing up: check the dynamics, their weights and the "
                    "integration interval."
                )
        except BaseException as exc:  # noqa: BLE001 - re-raised after the solver returns
            self.error, self.error_t = exc, float(t)
            if self.raise_through:
                raise DynamicsFailed from exc
            return self._nan
        return out


class FdGuardedRhs(Rhs):
    """An :class:`Rhs` that stops a dense finite-difference Jacobian on a large state.

    LSODA (and odeint) form such a Jacobian with ``n`` calls at the same time; a
    run of more consecutive same-time calls than any corrector iteration makes
    betrays it.
    """

    __slots__ = ("_last_t", "_same_t", "_limit", "_method")

    def __init__(self, fun, n, raise_through, method_name):
        super().__init__(fun, n, raise_through)
        self._last_t = None
        self._same_t = 0
        self._limit = 64
        self._method = method_name

    def __call__(self, t, y):
        if t == self._last_t:
            self._same_t += 1
            if self._same_t > self._limit and self.error is None:
                self.error, self.error_t = fd_jacobian_error(self._method, self.n), float(t)
                if self.raise_through:
                    raise DynamicsFailed from self.error
                return self._nan
        else:
            self._last_t, self._same_t = t, 0
        return Rhs.__call__(self, t, y)


def fd_jacobian_error(method: str, n: int) -> SolverError:
    return SolverError(
        f"'{method}' switched to its stiff method and began to form a dense "
        f"finite-difference Jacobian of the {n}-dimensional state ({n + 1} evaluations "
        f"and {n}x{n} memory per Jacobian). Pass jac= (dense, or banded with "
        "lband/uband), choose a non-stiff method such as 'adams' or 'dopri5', or "
        f"raise max_fd_jacobian_size above {n} to allow it.",
        method=method,
    )


class Jac:
    """Wraps a user Jacobian: copies the input, checks the shape, records errors. A
    SciPy sparse matrix (per-sample blocks for Radau) passes through unconverted."""

    __slots__ = ("fun", "shape", "error", "raise_through")

    def __init__(self, fun, shape, raise_through):
        self.fun, self.shape, self.error, self.raise_through = fun, shape, None, raise_through

    def __call__(self, t, y):
        if self.error is not None:
            return np.full(self.shape, np.nan)
        try:
            out = self.fun(t, y.copy())
            if not _sparse.issparse(out):
                out = np.asarray(out, dtype=np.float64)
            if out.shape != self.shape and not (_sparse.issparse(out)
                                                and out.shape == (self.shape[1],) * 2):
                raise ValueError(
                    f"The Jacobian returned shape {out.shape}; expected {self.shape} "
                    "(dense: (n, n); banded: (lband + uband + 1, n) with "
                    "jac[i - j + uband, j] = df_i/dy_j)."
                )
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            if self.raise_through:
                raise DynamicsFailed from exc
            return np.full(self.shape, np.nan)
        return out


def failure_hint(message: str) -> str:
    low = message.lower()
    if "excess work" in low or "larger nmax" in low or "nsteps" in low:
        return ("The step budget was exhausted: raise max_steps, loosen rtol/atol, or use "
                "a stiff method ('bdf', 'lsoda') if the dynamics are stiff.")
    if "too small" in low or "underflow" in low or "repeated" in low:
        return ("The step size collapsed: the dynamics are probably stiff or singular "
                "here; try 'bdf' or 'lsoda', or loosen the tolerances.")
    if "stiff" in low:
        return "The problem looks stiff: use 'bdf' or 'lsoda'."
    return ""


def raise_callback_error(error: BaseException, method: str, t, ys, info) -> None:
    info.success, info.status = False, -99
    info.message = f"{type(error).__name__}: {error}"
    if isinstance(error, SolverError):
        error.info, error.ys = info, ys
        raise error
    if hasattr(error, "add_note"):
        error.add_note(f"(raised by the dynamics at t={t!r} during a '{method}' solve; "
                       f"{len(ys)} output time(s) had been reached)")
    raise error




class EventFn:
    """Wraps an event function ``g(t, y) -> float``: counts calls, copies the input,
    checks that it returns one finite number."""

    __slots__ = ("fun", "ncalls")

    def __init__(self, fun: Callable):
        self.fun, self.ncalls = fun, 0

    def __call__(self, t, y) -> float:
        self.ncalls += 1
        out = np.asarray(self.fun(t, y.copy()), dtype=np.float64)
        if out.size != 1:
            raise ValueError(
                f"The event function returned an array of shape {out.shape} at t={t!r}; it "
                "must return one number g(t, y) whose zero is the event (reduce a vector "
                "condition to a scalar, e.g. with a minimum or a product).")
        value = float(out.reshape(()))
        if not np.isfinite(value):
            raise FloatingPointError(f"The event function returned {value!r} at t={t!r}; "
                                     "it must be finite along the trajectory.")
        return value
