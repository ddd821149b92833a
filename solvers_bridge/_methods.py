"""The method registry: one thin class over SciPy per method, one contract for all.

Contract of a method class (see :class:`Method`):

* ``Method(rtol, atol, jac=None, **options)`` validates its options once.
* ``method.run(rhs, y0, t)`` integrates ``y' = rhs(t, y)`` from ``y0`` at ``t[0]``
  and returns ``(ys, info)``: the states at every requested time (``ys[0] == y0``)
  and a :class:`SolveInfo`. Times may increase or decrease. Failure raises
  :class:`SolverError` carrying the states reached so far.

``rhs`` is a :class:`_Rhs`: it counts calls, copies the solver's buffer before the
user sees it, checks the returned shape and finiteness, and records (rather than
lets SciPy swallow) an exception raised by the user's function.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from scipy import integrate as _si

from solvers_bridge._errors import NestedSolveError, SolverError
from solvers_bridge._info import SolveInfo

#: Options every method accepts (besides rtol, atol and jac).
_COMMON_OPTIONS = frozenset({"max_steps", "first_step", "max_step"})

#: Default limit on the state size for which a dense finite-difference Jacobian
#: may be formed (each one costs n + 1 evaluations and n^2 memory).
DEFAULT_MAX_FD_JACOBIAN_SIZE = 1000

#: Default step budget per output interval (SciPy's own default of 500 is too
#: small for learned dynamics; exceeding the budget is an error, never a silent
#: wrong answer).
DEFAULT_MAX_STEPS = 10_000

_active = threading.local()


@contextlib.contextmanager
def _reentrancy_guard(method: Method):
    """Refuses a solve nested inside a callback of a solve of the same integrator."""
    active = getattr(_active, "integrators", None)
    if active is None:
        active = _active.integrators = []
    if method.integrator in active:
        raise NestedSolveError(
            f"A '{method.name}' solve was started inside the right-hand side of another "
            f"solve that uses the same integrator ({method.integrator}). That integrator "
            "is not reentrant: a nested solve corrupts the outer one (LSODA silently "
            "returns a wrong answer). Use a different method for the inner solve, e.g. "
            f"{_nesting_alternative(method.integrator)!r}.",
            method=method.name,
        )
    active.append(method.integrator)
    try:
        yield
    finally:
        active.pop()


def _nesting_alternative(integrator: str) -> str:
    return "dopri5" if integrator != "dopri5" else "adams"


class _DynamicsFailed(Exception):
    """Internal: the user's function failed; the original error is in ``rhs.error``."""


class _Rhs:
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
                raise _DynamicsFailed from exc
            return self._nan
        return out


class _FdGuardedRhs(_Rhs):
    """An :class:`_Rhs` that stops a dense finite-difference Jacobian on a large state.

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
                self.error, self.error_t = _fd_jacobian_error(self._method, self.n), float(t)
                if self.raise_through:
                    raise _DynamicsFailed from self.error
                return self._nan
        else:
            self._last_t, self._same_t = t, 0
        return _Rhs.__call__(self, t, y)


def _fd_jacobian_error(method: str, n: int) -> SolverError:
    return SolverError(
        f"'{method}' switched to its stiff method and began to form a dense "
        f"finite-difference Jacobian of the {n}-dimensional state ({n + 1} evaluations "
        f"and {n}x{n} memory per Jacobian). Pass jac= (dense, or banded with "
        "lband/uband), choose a non-stiff method such as 'adams' or 'dopri5', or "
        f"raise max_fd_jacobian_size above {n} to allow it.",
        method=method,
    )


class _Jac:
    """Wraps a user Jacobian: copies the input, checks the shape, records errors."""

    __slots__ = ("fun", "shape", "error", "raise_through")

    def __init__(self, fun, shape, raise_through):
        self.fun, self.shape, self.error, self.raise_through = fun, shape, None, raise_through

    def __call__(self, t, y):
        if self.error is not None:
            return np.full(self.shape, np.nan)
        try:
            out = np.asarray(self.fun(t, y.copy()), dtype=np.float64)
            if out.shape != self.shape:
                raise ValueError(
                    f"The Jacobian returned shape {out.shape}; expected {self.shape} "
                    "(dense: (n, n); banded: (lband + uband + 1, n) with "
                    "jac[i - j + uband, j] = df_i/dy_j)."
                )
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            if self.raise_through:
                raise _DynamicsFailed from exc
            return np.full(self.shape, np.nan)
        return out


class Method:
    """Base class of the registry: validates options, runs a solve.

    Subclasses set ``name`` (the registry key), ``integrator`` (the SciPy code it
    drives, for the reentrancy guard), ``options`` (accepted options besides the
    common ones), ``jacobian`` (whether it uses a Jacobian) and ``fd_jacobian``
    (whether, without one, it may form a dense finite-difference Jacobian).
    """

    name: ClassVar[str]
    integrator: ClassVar[str]
    options: ClassVar[frozenset] = frozenset()
    jacobian: ClassVar[bool] = False
    fd_jacobian: ClassVar[bool] = False
    raise_through: ClassVar[bool] = False
    stiff: ClassVar[bool] = False
    #: Whether the error norm is a root mean square (VODE, DOPRI) rather than a
    #: maximum (LSODA); the adjoint's seminorm compensates for the RMS dilution.
    rms_norm: ClassVar[bool] = True
    #: Whether rtol and atol may be given per component (SciPy 1.17's DOPRI codes
    #: take scalars only).
    vector_tolerances: ClassVar[bool] = True

    def __init__(self, rtol, atol, jac: Callable | None = None, *,
                 max_fd_jacobian_size: int = DEFAULT_MAX_FD_JACOBIAN_SIZE, **options):
        allowed = _COMMON_OPTIONS | self.options
        unknown = sorted(set(options) - allowed)
        jac_name = {"jac"} if self.jacobian else set()
        if unknown:
            raise TypeError(
                f"Unknown option(s) {unknown} for method '{self.name}'. Its options are "
                f"{sorted(allowed | {'rtol', 'atol', 'max_fd_jacobian_size'} | jac_name)}."
            )
        if jac is not None and not self.jacobian:
            raise TypeError(
                f"Method '{self.name}' does not use a Jacobian; jac= is only accepted by "
                f"{sorted(k for k, v in METHODS.items() if v.jacobian)}."
            )
        if jac is not None and not callable(jac):
            raise TypeError(f"jac must be callable as jac(t, y); got {type(jac).__name__}.")
        if not self.vector_tolerances and (np.ndim(rtol) or np.ndim(atol)):
            raise ValueError(
                f"Method '{self.name}' takes scalar rtol and atol only (SciPy's DOPRI codes "
                "have no per-component tolerances); use 'adams', 'bdf' or 'lsoda' for "
                "per-component tolerances.")
        self.rtol, self.atol, self.jac = rtol, atol, jac
        self.max_fd_jacobian_size = int(max_fd_jacobian_size)
        self.max_steps = int(options.pop("max_steps", DEFAULT_MAX_STEPS))
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer; got {self.max_steps}.")
        for key in ("first_step", "max_step", "min_step"):
            value = options.get(key)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a positive finite number; got {value!r}.")
        self.opts = options

    @property
    def banded(self) -> bool:
        return self.opts.get("lband") is not None or self.opts.get("uband") is not None

    def make_rhs(self, fun: Callable, n: int) -> _Rhs:
        """Wraps ``fun`` for this method, guarding against large dense FD Jacobians."""
        if self.fd_jacobian and self.jac is None and not self.banded:
            if n > self.max_fd_jacobian_size:
                if self.stiff:
                    raise _fd_jacobian_error(self.name, n)
                return _FdGuardedRhs(fun, n, self.raise_through, self.name)
        return _Rhs(fun, n, self.raise_through)

    def jac_shape(self, n: int) -> tuple[int, int]:
        if self.banded:
            return (int(self.opts.get("lband") or 0) + int(self.opts.get("uband") or 0) + 1, n)
        return (n, n)

    def run(self, fun: Callable, y0: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, SolveInfo]:
        """Integrates and returns ``(ys, info)``; see the module docstring."""
        rhs = self.make_rhs(fun, y0.size)
        jac = None
        if self.jac is not None:
            jac = _Jac(self.jac, self.jac_shape(y0.size), self.raise_through)
        with _reentrancy_guard(self):
            ys, info, failure = self._run(rhs, jac, y0, t)
        info.nfev = rhs.nfev
        error = rhs.error or (jac.error if jac is not None else None)
        if error is not None:
            _raise_callback_error(error, self.name, rhs.error_t, ys, info)
        if failure is not None:
            raise SolverError(
                f"The '{self.name}' solver failed at t={info.t_reached!r} while integrating "
                f"towards t={failure!r} (last step size {info.last_step!r}, "
                f"{info.nsteps} steps, {info.nfev} evaluations): {info.message} "
                + _failure_hint(info.message),
                method=self.name, t=info.t_reached, step=info.last_step,
                solver_message=info.message, info=info, ys=ys,
            )
        return ys, info

    def _run(self, rhs, jac, y0, t):  # pragma: no cover - abstract
        raise NotImplementedError


def _failure_hint(message: str) -> str:
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


def _raise_callback_error(error: BaseException, method: str, t, ys, info) -> None:
    info.success, info.status = False, -99
    info.message = f"{type(error).__name__}: {error}"
    if isinstance(error, SolverError):
        error.info, error.ys = info, ys
        raise error
    if hasattr(error, "add_note"):
        error.add_note(f"(raised by the dynamics at t={t!r} during a '{method}' solve; "
                       f"{len(ys)} output time(s) had been reached)")
    raise error


class _OdeMethod(Method):
    """Methods driven through :class:`scipy.integrate.ode`."""

    _scipy_name: ClassVar[str]
    _scipy_kwargs: ClassVar[dict] = {}
    _option_names: ClassVar[dict] = {"first_step": "first_step", "max_step": "max_step",
                                     "min_step": "min_step", "lband": "lband", "uband": "uband"}

    def _integrator_kwargs(self) -> dict:
        kw = dict(self._scipy_kwargs, rtol=self.rtol, atol=self.atol, nsteps=self.max_steps)
        for key, value in self.opts.items():
            if value is not None:
                kw[self._option_names.get(key, key)] = value
        return kw

    def _run(self, rhs, jac, y0, t):
        r = _si.ode(rhs, jac)
        r.set_integrator(self._scipy_name, **self._integrator_kwargs())
        stepper = self._attach_solout(r)
        try:
            r.set_initial_value(y0, t[0])
        except MemoryError as exc:
            raise self._workspace_error(y0.size) from exc
        ys = np.empty((len(t), y0.size))
        ys[0] = y0
        info = SolveInfo(method=self.name, t_reached=float(t[0]))
        last_method = None
        for i in range(1, len(t)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # failures are raised below instead
                    y = r.integrate(t[i])
            except _DynamicsFailed:
                self._fill_info(r, info, stepper)
                return ys[:i], info, None
            self._fill_info(r, info, stepper)
            if rhs.error is not None or (jac is not None and jac.error is not None):
                return ys[:i], info, None
            if not r.successful():
                code = r.get_return_code()
                info.success, info.status = False, int(code)
                info.message = r._integrator.messages.get(code, f"return code {code}")
                return ys[:i], info, float(t[i])
            ys[i] = y
            last_method = self._count_switch(r, info, last_method)
        return ys, info, None

    def _attach_solout(self, r):
        return None

    def _workspace_error(self, n: int) -> SolverError:
        return SolverError(
            f"The '{self.name}' solver could not allocate its work arrays for a state of "
            f"{n} components; SciPy allocates them in full before the first step. Use a "
            "smaller state or a method with less workspace ('adams' or 'dopri5').",
            method=self.name)

    def _count_switch(self, r, info, last_method):
        return None

    def _fill_info(self, r, info, stepper):
        integ = r._integrator
        info.nsteps = int(integ.iwork[10])
        info.njev = int(integ.iwork[12])
        info.last_step = float(integ.rwork[10])
        info.t_reached = float(r.t)


class Lsoda(_OdeMethod):
    """ODEPACK LSODA through ``scipy.integrate.ode('lsoda')``: switches automatically
    between Adams (non-stiff) and BDF (stiff). Without ``jac`` its stiff mode forms a
    finite-difference Jacobian; on states above ``max_fd_jacobian_size`` that is
    stopped with an error."""

    name = "lsoda"
    integrator = "lsoda"
    options = frozenset({"min_step", "lband", "uband", "max_order_ns", "max_order_s"})
    jacobian = True
    fd_jacobian = True
    raise_through = True
    rms_norm = False
    _scipy_name = "lsoda"

    def _workspace_error(self, n: int) -> SolverError:
        gib = 8.0 * n * n / 2 ** 30
        return SolverError(
            f"'lsoda' (scipy.integrate.ode) allocates the workspace of its stiff method, a "
            f"dense {n}x{n} Jacobian ({gib:,.0f} GiB), before the first step, and this "
            "machine cannot hold it. For a state this large use 'adams' (VODE's Adams: the "
            "non-stiff method LSODA starts with), 'odeint' (the same LSODA code, allocating "
            "its workspace lazily), or give jac= banded with lband/uband.",
            method=self.name)

    def _count_switch(self, r, info, last_method):
        used = int(r._integrator.iwork[18])
        if last_method is not None and used != last_method:
            info.nswitches += 1
        return used


class Adams(_OdeMethod):
    """VODE implicit Adams with functional iteration (``ode('vode', method='adams')``):
    the paper's method. Uses no Jacobian."""

    name = "adams"
    integrator = "vode"
    options = frozenset({"min_step", "order"})
    _scipy_name = "vode"
    _scipy_kwargs = {"method": "adams", "with_jacobian": False}


class Bdf(_OdeMethod):
    """VODE BDF with Newton (chord) iteration, ``ode('vode', method='bdf',
    with_jacobian=True)``: for stiff problems. Takes ``jac`` (dense or banded via
    ``lband``/``uband``); without one it forms a finite-difference Jacobian, refused
    on states above ``max_fd_jacobian_size``.

    SciPy 1.17's VODE mishandles full (dense) Jacobians - a user Jacobian is read
    transposed (scipy/scipy#24933) and its own finite-difference one fared as badly
    here: about 17x more steps on a stiff MLP, outright failure on van der Pol at
    mu = 1000. Its banded path is right, so a dense Jacobian is handed to VODE as a
    band of full width (``lband = uband = n - 1``), which is the same matrix.
    """

    name = "bdf"
    integrator = "vode"
    options = frozenset({"min_step", "order", "lband", "uband"})
    jacobian = True
    fd_jacobian = True
    stiff = True
    _scipy_name = "vode"
    _scipy_kwargs = {"method": "bdf", "with_jacobian": True}

    def run(self, fun: Callable, y0: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, SolveInfo]:
        n = y0.size
        if self.banded or n == 1:
            return super().run(fun, y0, t)
        if self.jac is None and n > self.max_fd_jacobian_size:
            raise _fd_jacobian_error(self.name, n)
        dense = self.jac
        jac = None
        if dense is not None:
            rows, cols = _full_band_index(n)

            def jac(s, y):
                ab = np.zeros((2 * n - 1, n))
                ab[rows, cols] = np.asarray(dense(s, y), dtype=np.float64).ravel()
                return ab

        full = Bdf(self.rtol, self.atol, jac, max_fd_jacobian_size=self.max_fd_jacobian_size,
                   max_steps=self.max_steps, **{**self.opts, "lband": n - 1, "uband": n - 1})
        return full.run(fun, y0, t)


@functools.lru_cache(maxsize=8)
def _full_band_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Where ``J[i, j]`` (row-major order) goes in the packed band of width ``n - 1``:
    ``ab[n - 1 + i - j, j]``."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return (n - 1 + i - j).ravel(), j.ravel()


class _Dopri(_OdeMethod):
    vector_tolerances = False
    _option_names = {"first_step": "first_step", "max_step": "max_step"}

    def _attach_solout(self, r):
        steps = [None, None]  # previous and current accepted time

        def solout(t, y):
            steps[0], steps[1] = steps[1], t

        r.set_solout(solout)
        return steps

    def _fill_info(self, r, info, stepper):
        integ = r._integrator
        info.nsteps += int(integ.iwork[18])  # accepted steps; DOPRI restarts per call
        info.njev = 0
        prev, cur = stepper
        info.last_step = None if prev is None else float(cur - prev)
        info.t_reached = float(r.t)


class Dopri5(_Dopri):
    """Explicit Runge-Kutta 5(4) of Dormand and Prince (``ode('dopri5')``), the
    method torchdiffeq defaults to."""

    name = "dopri5"
    integrator = "dopri5"
    _scipy_name = "dopri5"


class Dop853(_Dopri):
    """Explicit Runge-Kutta 8(5,3) of Dormand and Prince (``ode('dop853')``)."""

    name = "dop853"
    integrator = "dop853"
    _scipy_name = "dop853"


class Odeint(Method):
    """``scipy.integrate.odeint`` (ODEPACK LSODA): the exact call of the paper's code.
    Its failures, which SciPy reports only as a warning, are raised as errors."""

    name = "odeint"
    integrator = "lsoda"
    options = frozenset({"min_step", "lband", "uband", "max_order_ns", "max_order_s"})
    jacobian = True
    fd_jacobian = True
    raise_through = True
    rms_norm = False

    def _run(self, rhs, jac, y0, t):
        o = self.opts
        info = SolveInfo(method=self.name, t_reached=float(t[0]))
        if len(t) == 1:
            return y0[None].copy(), info, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ys, d = _si.odeint(
                    rhs, y0, t, Dfun=jac, tfirst=True, full_output=True,
                    rtol=self.rtol, atol=self.atol, mxstep=self.max_steps,
                    h0=o.get("first_step") or 0.0, hmax=o.get("max_step") or 0.0,
                    hmin=o.get("min_step") or 0.0, ml=o.get("lband"), mu=o.get("uband"),
                    mxordn=o.get("max_order_ns", 12), mxords=o.get("max_order_s", 5),
                )
        except _DynamicsFailed:
            return y0[None].copy(), info, None
        direction = np.sign(t[-1] - t[0])
        reached = (d["tcur"] - t[1:]) * direction >= 0
        ok = len(t) - 1 if reached.all() else int(np.argmin(reached))  # intervals done
        k = min(ok, len(t) - 2)  # the record of the last interval attempted
        info.nsteps = int(d["nst"][k])
        info.njev = int(d["nje"][k])
        info.last_step = float(d["hu"][k])
        info.t_reached = float(d["tcur"][k])
        used = d["mused"][: k + 1]
        info.nswitches = int(np.count_nonzero(np.diff(used))) if used.size else 0
        if ok < len(t) - 1 or "successful" not in d["message"]:
            info.success, info.status, info.message = False, -1, str(d["message"])
            return ys[: ok + 1], info, float(t[min(ok + 1, len(t) - 1)])
        info.t_reached = float(t[-1])
        return ys, info, None


#: The registry: method name -> class.
METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Lsoda, Adams, Bdf, Odeint, Dopri5, Dop853)
}


def get_method(name: str) -> type[Method]:
    """Returns the method class registered under ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown method {name!r}. Valid methods are: {', '.join(sorted(METHODS))}."
        ) from None
