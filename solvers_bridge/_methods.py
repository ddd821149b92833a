"""The method registry: one descriptor per method, one integrator per name.

A method is a class over one SciPy integrator. Its class attributes describe what it
can do (:meth:`Method.capabilities`); an instance, ``Method(rtol, atol, jac=None,
jac_blocks=None, **options)``, validates its options once and then runs any of the
three operations, always with the same integrator:

* :meth:`Method.run`: the states at requested output times (``ys[0] == y0``);
* :meth:`Method.run_dense`: the same with a dense solution of every accepted step
  (:class:`~solvers_bridge.DenseSolution`), which the dense adjoints keep;
* events: :meth:`Method.run_dense` with an event function, located on the
  integrator's own dense output, the state returned on the event surface.

Times may increase or decrease. Every operation counts evaluations at the callback,
checks shapes and finiteness, enforces the step budget, refuses a dense
finite-difference Jacobian on a large state and a nested solve of the same
integrator, and raises :class:`SolverError` (carrying the states reached) on failure.

The integrators: ODEPACK LSODA (``lsoda`` through ``scipy.integrate.ode``,
``odeint`` through ``scipy.integrate.odeint``; their dense output through
``scipy.integrate.LSODA``, the same code), VODE (``adams``, ``bdf``), the
Dormand-Prince codes (``dopri5``, ``dop853``), and SciPy's pure-Python solvers
(``radau``, ``rk45``, ``rk23``; reentrant).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from scipy import integrate as _si
from scipy import optimize as _opt

from solvers_bridge import _scipy_internals as _sx
from solvers_bridge._banded import block_layout
from solvers_bridge._callbacks import (
    DynamicsFailed,
    EventFn,
    FdGuardedRhs,
    Jac,
    Rhs,
    failure_hint,
    fd_jacobian_error,
    raise_callback_error,
    reentrancy_guard,
)
from solvers_bridge._dense import (
    DenseSolution,
    evaluate_row,
    hermite_row,
    nordsieck_row,
    q_row,
    row_width,
)
from solvers_bridge._errors import SolverError
from solvers_bridge._info import SolveInfo

#: Default limit on the state size for which a dense finite-difference Jacobian
#: may be formed (each one costs n + 1 evaluations and n^2 memory).
DEFAULT_MAX_FD_JACOBIAN_SIZE = 1000

#: Default step budget per output interval (SciPy's own default of 500 is too
#: small for learned dynamics; exceeding the budget is an error, never a silent
#: wrong answer).
DEFAULT_MAX_STEPS = 10_000

#: Options every method accepts (besides rtol, atol, jac and jac_blocks).
_COMMON_OPTIONS = frozenset({"max_steps", "first_step", "max_step", "max_fd_jacobian_size"})


#: The options' types: sizes and step sizes are positive reals, the rest integers
#: with their least value.
_REAL_OPTIONS = frozenset({"first_step", "max_step", "min_step"})
_INTEGER_OPTIONS = {"max_steps": 1, "max_fd_jacobian_size": 0, "lband": 0, "uband": 0,
                    "order": 1, "max_order_ns": 1, "max_order_s": 1}


def check_error_control(rtol, atol) -> None:
    """Refuses tolerances that are both zero (in any component): no error is met."""
    both_zero = (np.asarray(rtol) == 0) & (np.asarray(atol) == 0)
    if np.any(both_zero):
        where = "" if both_zero.ndim == 0 else (
            f" in component(s) {np.flatnonzero(both_zero)[:10].tolist()}")
        raise ValueError(
            f"rtol and atol are both zero{where}: no solver can meet a zero error. Give "
            "a positive rtol (relative error) or atol (absolute error), e.g. rtol=1e-7.")


def check_option(key: str, value):
    """The option's value as a Python number, or a clear error for a wrong one."""
    if value is None:
        return None
    if key in _REAL_OPTIONS:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"{key} must be a positive number; got {value!r} "
                            f"({type(value).__name__}).")
        value = float(value)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{key} must be a positive finite number; got {value!r}.")
        return value
    if key in _INTEGER_OPTIONS:
        least = _INTEGER_OPTIONS[key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{key} must be an integer >= {least}; got {value!r} "
                            f"({type(value).__name__}).")
        if value < least:
            raise ValueError(f"{key} must be an integer >= {least}; got {value!r}.")
        return int(value)
    return value


class Method:
    """Base class of the registry (see the module docstring).

    Class attributes (the descriptor):
        name: The registry key.
        scipy_call: The SciPy code it drives, in words.
        integrator: The non-reentrant integrator it uses (``lsoda``, ``vode``,
            ``dopri5``, ``dop853``) or ``None`` for a reentrant one; two nested
            solves of one integrator are refused.
        stiff: Whether it is meant for stiff problems.
        jacobians: The Jacobians it takes: ``dense`` (``jac(t, y) -> (n, n)``),
            ``banded`` (``jac`` packed with ``lband``/``uband``), ``blocks``
            (``jac_blocks(t, y) -> (B, d, d)``, per-sample blocks).
        fd_jacobian: Whether, without a Jacobian, it forms a finite-difference one.
        vector_tolerances: Whether rtol and atol may have one entry per component.
        options: Options it accepts besides the common ones.
        dense_kind: Its dense output (see :mod:`solvers_bridge._dense`).
        multistep: Whether it is a multistep code (LSODA, VODE): a restart begins again
            at order one, so many short solves cost it more than a one-step method.
        rms_norm: Whether its error norm is a root mean square (VODE, DOPRI, SciPy's
            solvers) rather than a maximum (LSODA).
    """

    name: ClassVar[str]
    scipy_call: ClassVar[str]
    integrator: ClassVar[str | None]
    stiff: ClassVar[bool] = False
    jacobians: ClassVar[frozenset] = frozenset()
    fd_jacobian: ClassVar[bool] = False
    vector_tolerances: ClassVar[bool] = True
    options: ClassVar[frozenset] = frozenset()
    dense_kind: ClassVar[str] = "hermite"
    rms_norm: ClassVar[bool] = True
    multistep: ClassVar[bool] = False
    #: Whether the integrator propagates a Python exception from the callback cleanly.
    raise_through: ClassVar[bool] = True
    #: Options of :meth:`run` that the dense operations do not take.
    solve_only_options: ClassVar[frozenset] = frozenset()

    def __init__(self, rtol, atol, jac: Callable | None = None, *,
                 jac_blocks: Callable | None = None, **options):
        allowed = _COMMON_OPTIONS | self.options
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(
                f"Unknown option(s) {unknown} for method '{self.name}'. Its options are "
                f"{sorted(allowed | {'rtol', 'atol'})}"
                + (f" and the Jacobians {sorted(self.jacobians)}." if self.jacobians else "."))
        for label, given in (("jac", jac), ("jac_blocks", jac_blocks)):
            if given is not None and not callable(given):
                raise TypeError(f"{label} must be callable as {label}(t, y); got "
                                f"{type(given).__name__}.")
        if jac is not None and jac_blocks is not None:
            raise ValueError("Give jac= or jac_blocks=, not both.")
        banded = options.get("lband") is not None or options.get("uband") is not None
        kind = ("blocks" if jac_blocks is not None else "banded" if jac is not None and banded
                else "dense" if jac is not None else None)
        if kind is not None and kind not in self.jacobians:
            takes = sorted(m for m, cls in METHODS.items() if kind in cls.jacobians)
            what = "does not use a Jacobian" if not self.jacobians else (
                f"does not take a {kind} Jacobian")
            raise TypeError(f"Method '{self.name}' {what}; a {kind} Jacobian is accepted by "
                            f"{takes}.")
        if jac_blocks is not None and banded:
            raise ValueError("jac_blocks sets the band (lband = uband = d - 1, d the size of "
                             "one sample) itself; do not pass lband or uband with it.")
        if not self.vector_tolerances and (np.ndim(rtol) or np.ndim(atol)):
            raise ValueError(
                f"Method '{self.name}' takes scalar rtol and atol only (SciPy's DOPRI codes "
                "have no per-component tolerances); use 'adams', 'bdf' or 'lsoda' for "
                "per-component tolerances.")
        check_error_control(rtol, atol)
        options = {k: check_option(k, v) for k, v in options.items()}
        if (options.get("min_step") or 0) > (options.get("max_step") or np.inf):
            raise ValueError(f"min_step={options['min_step']!r} is larger than "
                             f"max_step={options['max_step']!r}; give min_step <= max_step.")
        self.rtol, self.atol, self.jac, self.jac_blocks = rtol, atol, jac, jac_blocks
        self.max_fd_jacobian_size = options.pop("max_fd_jacobian_size",
                                                DEFAULT_MAX_FD_JACOBIAN_SIZE)
        self.max_steps = options.pop("max_steps", DEFAULT_MAX_STEPS)
        self.opts = {k: v for k, v in options.items() if v is not None}

    # -- the descriptor ---------------------------------------------------------------

    @classmethod
    def accepted_options(cls) -> frozenset:
        """Every option name the method takes (the common ones and its own)."""
        return _COMMON_OPTIONS | cls.options

    @classmethod
    def capabilities(cls) -> dict:
        """What the method is and supports, as a plain dictionary."""
        return {
            "name": cls.name,
            "scipy_call": cls.scipy_call,
            "integrator": cls.integrator,
            "reentrant": cls.integrator is None,
            "stiff": cls.stiff,
            "multistep": cls.multistep,
            "jacobians": sorted(cls.jacobians),
            "fd_jacobian": cls.fd_jacobian,
            "vector_tolerances": cls.vector_tolerances,
            "dense_output": cls.dense_kind,
            "operations": ["solve", "dense", "events"],
            "options": sorted(cls.accepted_options()),
        }

    # -- the operations ---------------------------------------------------------------

    def run(self, fun: Callable, y0: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, SolveInfo]:
        """Integrates and returns ``(ys, info)`` at the output times ``t``."""
        if y0.size == 0:
            return np.zeros((len(t), 0)), self._empty_info(t)
        rhs, jac, opts = self._setup(fun, y0, float(t[0]))
        with reentrancy_guard(self.name, self.integrator):
            ys, info, failure = self._run(rhs, jac, opts, y0, t)
        self._finish(rhs, jac, ys, info, failure)
        return ys, info

    def run_dense(self, fun: Callable, y0: np.ndarray, t: np.ndarray,
                  event: Callable | None = None, *, terminal: bool = True,
                  direction: float = 0.0) -> DenseSolution:
        """Integrates keeping every step's interpolant; returns a :class:`DenseSolution`
        with ``ys`` at ``t`` and ``info``. With ``event(t, y) -> float`` the crossings
        of zero (with the sign of slope ``direction``, 0 for any) are located on the
        dense output: ``t_events`` and ``y_events`` (the interpolant there, so on the
        event surface to root-finding precision); with ``terminal`` the solve stops
        at the first, and its solution ends there."""
        bad = sorted(set(self.opts) & self.solve_only_options)
        if bad:
            raise ValueError(f"Option(s) {bad} of method '{self.name}' apply to its solve to "
                             "output times only, not to its dense output or events.")
        if y0.size == 0:
            if event is not None:
                raise ValueError("y0 is empty (no components): an event function of the "
                                 "state has nothing to follow. Give a non-empty state.")
            table = np.zeros((1, row_width(self.dense_kind, 0)))
            table[0, :2] = t[0], t[-1]
            return DenseSolution(self.dense_kind, table, (float(t[0]), float(t[-1])), 0,
                                 np.zeros((len(t), 0)), self._empty_info(t))
        rhs, jac, opts = self._setup(fun, y0, float(t[0]))
        rec = _Recorder(self.dense_kind, y0, t, self.max_steps,
                        None if event is None else EventFn(event), terminal, direction)
        t_start, y_start, njev = float(t[0]), y0, 0
        while True:
            with reentrancy_guard(self.name, self.integrator):
                info, failure = self._steps(rhs, jac, opts, y_start, t_start, float(t[-1]),
                                            rec)
            njev += info.njev
            if failure is not None or rec.pending is None or rec.error is not None:
                break
            # A crossing inside a Hermite-interpolated step: located again on the
            # integrator's own states (re-solved from the step's start, outside the
            # stepping run), then the run resumes from the step's end.
            row, lo, hi = rec.pending
            rec.pending = None
            try:
                t_star, y_star = self._refine(fun, row, lo, hi, rec)
            except Exception as exc:  # noqa: BLE001 - raised below with the solve's record
                rec.error = exc
                break
            rec.t_events.append(t_star)
            rec.y_events.append(y_star)
            if rec.stopped:
                rec.t = t_star
                break
            if not rec.wants_more:
                break
            t_start = float(row[1])
            y_start = evaluate_row(self.dense_kind, row, y0.size, t_start)
        info.njev = njev
        rhs.nfev += rec.extra_nfev
        failure = rec.close(rhs, info, failure)
        ys = rec.ys[:rec.filled]
        self._finish(rhs, jac, ys, info, failure if rec.filled < len(t) and not rec.stopped
                     else None)
        info.nintervals = max(len(t) - 1, 1)
        end = rec.t if rec.stopped else float(t[-1])
        table = (np.array(rec.rows) if rec.rows else
                 np.zeros((0, row_width(self.dense_kind, y0.size))))
        sol = DenseSolution(self.dense_kind, table, (float(t[0]), end), y0.size, ys, info)
        sol.t_events = np.array(rec.t_events, dtype=np.float64)
        sol.y_events = np.array(rec.y_events, dtype=np.float64).reshape(-1, y0.size)
        return sol

    def _empty_info(self, t) -> SolveInfo:
        """An empty state: nothing to integrate, no evaluation, no step."""
        info = SolveInfo(method=self.name, t_reached=float(t[-1]))
        info.nintervals = max(len(t) - 1, 1)
        return info

    def _refine(self, fun, row, lo, hi, rec):
        """The event time on the integrator's own states: Brent's method on
        ``g(s, Y(s))``, ``Y(s)`` solved by this method from the step's start."""
        n, t_old = rec.n, float(row[0])
        y_old = evaluate_row(self.dense_kind, row, n, t_old)
        states = {t_old: y_old}

        def state(s):
            if s not in states:
                ys, info = self.run(fun, y_old, np.array([t_old, s]))
                rec.extra_nfev += info.nfev
                states[s] = ys[-1]
            return states[s]

        def along(s):
            return rec.event(s, state(s))

        a, b = sorted((lo, hi))
        ga, gb = along(a), along(b)
        if ga == 0 or gb == 0 or np.sign(ga) == np.sign(gb):
            # The re-solved ends do not bracket (a crossing within the tolerance):
            # the interpolant's root stands.
            root = rec.interpolant_root
            return root, evaluate_row(self.dense_kind, row, n, root)
        eps = np.finfo(float).eps
        root = _opt.brentq(along, a, b, xtol=4 * eps * max(abs(a), abs(b), 1e-300),
                           rtol=4 * eps, maxiter=200)
        return root, state(root)

    # -- shared machinery -------------------------------------------------------------

    def _setup(self, fun, y0, t0):
        """The counted right-hand side, the wrapped Jacobian and the solver options."""
        n = y0.size
        jac, opts = self.jac, dict(self.opts)
        if self.jac_blocks is not None:
            blocks = self.jac_blocks
            layout = block_layout(blocks, t0, y0)
            if "lband" in self.options:
                def jac(s, y):
                    return layout.banded(blocks(s, y))

                opts["lband"] = opts["uband"] = layout.bandwidth
            else:
                def jac(s, y):
                    return layout.sparse(blocks(s, y))
        jac, opts = self._adapt_jacobian(jac, opts, n)
        banded = opts.get("lband") is not None or opts.get("uband") is not None
        if self.fd_jacobian and jac is None and not banded and n > self.max_fd_jacobian_size:
            if self.stiff:
                raise fd_jacobian_error(self.name, n)
            rhs = FdGuardedRhs(fun, n, self.raise_through, self.name)
        else:
            rhs = Rhs(fun, n, self.raise_through)
        if jac is not None:
            shape = ((int(opts.get("lband") or 0) + int(opts.get("uband") or 0) + 1, n)
                     if banded else (n, n))
            jac = Jac(jac, shape, self.raise_through)
        return rhs, jac, opts

    def _adapt_jacobian(self, jac, opts, n):
        return jac, opts

    def _finish(self, rhs, jac, ys, info, failure):
        info.nfev = rhs.nfev
        info.stiff = info.stiff or self.stiff
        error = rhs.error or (jac.error if jac is not None else None)
        if error is not None:
            raise_callback_error(error, self.name, rhs.error_t, ys, info)
        if failure is not None:
            raise SolverError(
                f"The '{self.name}' solver failed at t={info.t_reached!r} while integrating "
                f"towards t={failure!r} (last step size {info.last_step!r}, "
                f"{info.nsteps} steps, {info.nfev} evaluations): {info.message} "
                + failure_hint(info.message),
                method=self.name, t=info.t_reached, step=info.last_step,
                solver_message=info.message, info=info, ys=ys,
            )

    def _run(self, rhs, jac, opts, y0, t):
        """Solve to output times; by default through the dense stepping."""
        rec = _Recorder(self.dense_kind, y0, t, self.max_steps, None, True, 0.0, keep=False)
        info, failure = self._steps(rhs, jac, opts, y0, float(t[0]), float(t[-1]), rec)
        failure = rec.close(rhs, info, failure)
        return rec.ys[:rec.filled], info, failure if rec.filled < len(t) else None

    def _steps(self, rhs, jac, opts, y0, t0, t1, rec):  # pragma: no cover - abstract
        """Steps from ``t0`` towards ``t1`` handing each accepted step's table row to
        ``rec.on_step`` until it returns False; returns ``(info, failure)`` with
        ``failure`` the time aimed at when the solver failed (else ``None``)."""
        raise NotImplementedError


class _Recorder:
    """Receives the accepted steps of a dense run: keeps their rows, fills the
    output times, enforces the step budget per output interval, locates events."""

    def __init__(self, kind, y0, t, max_steps, event, terminal, direction, keep=True):
        self.kind, self.n, self.t_out = kind, y0.size, t
        self.sign = 1.0 if len(t) < 2 or t[-1] >= t[0] else -1.0
        self.ys = np.empty((len(t), y0.size))
        self.ys[0] = y0
        self.filled = 1
        self.rows: list = []
        self.keep = keep
        self.max_steps, self.steps_here, self.nsteps = max_steps, 0, 0
        self.t, self.last_step = float(t[0]), None
        self.failure = None
        self.message = ""
        self.error: BaseException | None = None
        self.event, self.terminal, self.direction = event, terminal, float(direction)
        self.t_events: list = []
        self.y_events: list = []
        self.stopped = False
        self.pending = None  # (row, lo, hi): a crossing to locate on re-solved states
        self.interpolant_root = None
        self.extra_nfev = 0
        self.g_old = None
        if event is not None:
            try:
                self.g_old = event(float(t[0]), y0)
            except Exception as exc:  # noqa: BLE001 - raised after the solve
                self.error = exc

    def close(self, rhs, info, failure):
        """Writes what the run saw into ``info`` (and an error raised here into
        ``rhs``); returns the failure, the recorder's own (step budget) if the
        solver's is ``None``."""
        if self.error is not None and rhs.error is None:
            rhs.error, rhs.error_t = self.error, self.t
        if failure is None and self.failure is not None:
            failure = self.failure
            info.success, info.status, info.message = False, -1, self.message
        info.nsteps = self.nsteps
        if self.nsteps:
            info.t_reached, info.last_step = float(self.t), self.last_step
        return failure

    @property
    def wants_more(self) -> bool:
        return (self.filled < len(self.t_out) and not self.stopped and self.failure is None
                and self.error is None)

    def on_step(self, row: np.ndarray) -> bool:
        """Takes one accepted step; returns whether to go on."""
        if self.error is not None:
            return False
        self.nsteps += 1
        self.steps_here += 1
        t_old, t_new = float(row[0]), float(row[1])
        end = float(self.t_out[-1])
        s_end = end if self.sign * (t_new - end) > 0 else t_new  # clip an overshoot
        self.last_step = t_new - t_old
        if self.keep:
            self.rows.append(row)
        if self.event is not None and self._locate(row, t_old, s_end):
            if self.error is not None or self.pending is not None:
                self.t = t_old
                return False
            self.t = float(self.t_events[-1])
            return False
        self.t = s_end
        while self.filled < len(self.t_out) and self.sign * (self.t_out[self.filled] - s_end) <= 0:
            self.ys[self.filled] = evaluate_row(self.kind, row, self.n,
                                                float(self.t_out[self.filled]))
            self.filled += 1
            self.steps_here = 0
        if self.filled < len(self.t_out) and self.steps_here >= self.max_steps:
            self.failure = float(self.t_out[self.filled])
            self.message = (f"excess work: {self.max_steps} steps (max_steps) in one output "
                            "interval without reaching its end")
            return False
        return self.wants_more and self.pending is None

    def _locate(self, row, t_old, s_end) -> bool:
        """Looks for a crossing in ``[t_old, s_end]``; returns True to stop."""
        kind, n, g = self.kind, self.n, self.event

        def along(s):
            return g(s, evaluate_row(kind, row, n, s))

        try:
            g_new = along(s_end)
            up = self.g_old <= 0 <= g_new
            down = self.g_old >= 0 >= g_new
            hit = (up and self.direction > 0) or (down and self.direction < 0) or (
                (up or down) and self.direction == 0)
            if hit and not (self.g_old == 0 and g_new == 0):
                if self.g_old == 0:
                    root = t_old
                elif g_new == 0:
                    root = s_end
                else:
                    lo, hi = sorted((t_old, s_end))
                    root = _opt.brentq(along, lo, hi, xtol=4 * np.finfo(float).eps * max(
                        abs(lo), abs(hi), 1e-300), rtol=4 * np.finfo(float).eps, maxiter=200)
                self.g_old = g_new
                self.stopped = self.terminal  # the solution then ends inside this step
                if kind == "hermite" and root not in (t_old, s_end):
                    self.pending, self.interpolant_root = (row, t_old, s_end), root
                    return self.terminal
                self.t_events.append(root)
                self.y_events.append(evaluate_row(kind, row, n, root))
                return self.terminal
            self.g_old = g_new
        except Exception as exc:  # noqa: BLE001 - raised after the solve
            self.error = exc
            return True
        return False


# -- scipy.integrate.ode: LSODA, VODE, DOPRI ------------------------------------------


class _OdeMethod(Method):
    """Methods driven through :class:`scipy.integrate.ode`."""

    _scipy_name: ClassVar[str]
    _scipy_kwargs: ClassVar[dict] = {}

    def _make_ode(self, rhs, jac, opts, y0, t0, t1, nsteps):
        if self._scipy_name in ("dopri5", "dop853"):
            rhs = _sx.trampoline(self._scipy_name + "-f", rhs)
        r = _si.ode(rhs, jac)
        opts = dict(opts)
        if opts.get("first_step") and t1 < t0:
            # LSODA and VODE take the first step with its sign ("illegal input"
            # otherwise); the option is a size, in either direction.
            opts["first_step"] = -float(opts["first_step"])
        r.set_integrator(self._scipy_name, **dict(self._scipy_kwargs, rtol=self.rtol,
                                                  atol=self.atol, nsteps=nsteps, **opts))
        return r

    def _start(self, r, y0, t0):
        try:
            r.set_initial_value(y0, t0)
        except MemoryError as exc:
            raise self._workspace_error(y0.size) from exc
        _sx.plug_leaks(r, self._scipy_name)

    def _run(self, rhs, jac, opts, y0, t):
        r = self._make_ode(rhs, jac, opts, y0, t[0], t[-1], self.max_steps)
        stepper = self._attach_solout(r)
        self._start(r, y0, t[0])
        try:
            return self._integrate_to(r, rhs, jac, y0, t, stepper)
        finally:
            _sx.release(r, self._scipy_name)

    def _integrate_to(self, r, rhs, jac, y0, t, stepper):
        ys = np.empty((len(t), y0.size))
        ys[0] = y0
        info = SolveInfo(method=self.name, t_reached=float(t[0]))
        last_method = None
        for i in range(1, len(t)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # failures are raised below instead
                    y = r.integrate(t[i])
            except DynamicsFailed:
                self._fill_info(r, info, stepper)
                return ys[:i], info, None
            self._fill_info(r, info, stepper)
            if rhs.error is not None or (jac is not None and jac.error is not None):
                return ys[:i], info, None
            if not r.successful():
                code = r.get_return_code()
                info.success, info.status = False, int(code)
                info.message = _sx.return_message(r, code)
                return ys[:i], info, float(t[i])
            ys[i] = y
            last_method = self._count_switch(r, info, last_method)
        return ys, info, None

    def _steps(self, rhs, jac, opts, y0, t0, t1, rec):
        """VODE one step at a time (``integrate(step=True)``), each accepted step's
        interpolant VODE's own Nordsieck polynomial."""
        r = self._make_ode(rhs, jac, opts, y0, t0, t1, self.max_steps)
        self._start(r, y0, t0)
        try:
            return self._vode_steps(r, rhs, jac, y0, t0, t1, rec)
        finally:
            _sx.release(r, self._scipy_name)

    def _vode_steps(self, r, rhs, jac, y0, t0, t1, rec):
        info = SolveInfo(method=self.name, t_reached=t0)
        t_old, n = t0, y0.size
        while rec.wants_more and rhs.error is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r.integrate(t1, step=True)
            except DynamicsFailed:
                break
            if rhs.error is not None or (jac is not None and jac.error is not None):
                break
            if not r.successful():
                code = r.get_return_code()
                info.success, info.status = False, int(code)
                info.message = _sx.return_message(r, code)
                self._fill_info(r, info, None)
                return info, float(t1)
            t_new = float(r.t)
            h, order, yh = _sx.vode_dense_output(r, n)
            if not rec.on_step(nordsieck_row(t_old, t_new, h, order, yh)):
                break
            t_old = t_new
        self._fill_info(r, info, None)
        return info, None

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
        integ = _sx.integrator(r)
        info.nsteps = int(integ.iwork[_sx.IWORK_NSTEPS])
        info.njev = int(integ.iwork[_sx.IWORK_NJEV])
        info.last_step = float(integ.rwork[_sx.RWORK_LAST_STEP])
        info.t_reached = float(r.t)


class _IvpMethod(Method):
    """Dense operations through one of SciPy's ``OdeSolver`` classes, stepped here."""

    _ivp_class: ClassVar[type]
    _ivp_options: ClassVar[frozenset] = frozenset({"first_step", "max_step"})

    def _row(self, solver) -> np.ndarray:
        y_old, q = _sx.rk_dense_output(solver)
        return q_row(solver.t_old, solver.t, y_old, q)

    def _steps(self, rhs, jac, opts, y0, t0, t1, rec):
        info = SolveInfo(method=self.name, t_reached=t0)
        kwargs = {k: v for k, v in opts.items() if k in self._ivp_options}
        if jac is not None:
            kwargs["jac"] = jac
        if t1 == t0:
            return info, None
        solver = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                solver = self._ivp_class(rhs, t0, y0, t1, rtol=self.rtol, atol=self.atol,
                                         **kwargs)
                if self._ivp_class is _si.LSODA:
                    _sx.plug_leaks(_sx.ivp_lsoda_ode(solver), "lsoda")
                while rec.wants_more:
                    message = solver.step()
                    if rhs.error is not None or (jac is not None and jac.error is not None):
                        break
                    if solver.status == "failed":
                        info.success, info.status, info.message = False, -1, str(message)
                        info.njev = int(getattr(solver, "njev", 0))
                        return info, float(t1)
                    if not rec.on_step(self._row(solver)) or solver.status == "finished":
                        break
        except DynamicsFailed:
            pass
        except MemoryError as exc:
            raise SolverError(f"The '{self.name}' solver could not allocate its work arrays "
                              f"for a state of {y0.size} components.", method=self.name) from exc
        info.njev = int(getattr(solver, "njev", 0) or 0)
        return info, None


class Lsoda(_OdeMethod, _IvpMethod):
    """ODEPACK LSODA: switches automatically between Adams (non-stiff) and BDF
    (stiff). Without ``jac`` its stiff mode forms a finite-difference Jacobian; on
    states above ``max_fd_jacobian_size`` that is stopped with an error."""

    name = "lsoda"
    scipy_call = "ode('lsoda'); dense: LSODA (the same ODEPACK code)"
    integrator = "lsoda"
    options = frozenset({"min_step", "lband", "uband", "max_order_ns", "max_order_s"})
    solve_only_options = frozenset({"max_order_ns", "max_order_s"})
    jacobians = frozenset({"dense", "banded", "blocks"})
    fd_jacobian = True
    rms_norm = False
    multistep = True
    dense_kind = "nordsieck"
    _scipy_name = "lsoda"
    _ivp_class = _si.LSODA
    _ivp_options = frozenset({"first_step", "max_step", "min_step", "lband", "uband"})
    _steps = _IvpMethod._steps

    def _row(self, solver) -> np.ndarray:
        h, order, yh = _sx.lsoda_dense_output(solver)
        return nordsieck_row(solver.t_old, solver.t, h, order, yh)

    def _workspace_error(self, n: int) -> SolverError:
        gib = 8.0 * n * n / 2 ** 30
        return SolverError(
            f"'{self.name}' allocates the workspace of its stiff method, a dense {n}x{n} "
            f"Jacobian ({gib:,.0f} GiB), before the first step, and this machine cannot hold "
            "it. For a state this large use 'adams' (VODE's Adams: the non-stiff method "
            "LSODA starts with), 'odeint' (the same LSODA code, allocating its workspace "
            "lazily), or give jac= banded with lband/uband.",
            method=self.name)

    def _count_switch(self, r, info, last_method):
        used = int(_sx.integrator(r).iwork[_sx.IWORK_LSODA_METHOD])
        info.stiff = info.stiff or used == 2
        if last_method is not None and used != last_method:
            info.nswitches += 1
        return used


class Adams(_OdeMethod):
    """VODE implicit Adams with functional iteration (``ode('vode', method='adams')``):
    the paper's method. Uses no Jacobian."""

    name = "adams"
    scipy_call = "ode('vode', method='adams')"
    integrator = "vode"
    options = frozenset({"min_step", "order"})
    raise_through = False
    multistep = True
    dense_kind = "nordsieck"
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
    scipy_call = "ode('vode', method='bdf', with_jacobian=True)"
    integrator = "vode"
    stiff = True
    options = frozenset({"min_step", "order", "lband", "uband"})
    jacobians = frozenset({"dense", "banded", "blocks"})
    fd_jacobian = True
    raise_through = False
    multistep = True
    dense_kind = "nordsieck"
    _scipy_name = "vode"
    _scipy_kwargs = {"method": "bdf", "with_jacobian": True}

    def _adapt_jacobian(self, jac, opts, n):
        if opts.get("lband") is not None or opts.get("uband") is not None or n == 1:
            return jac, opts
        if jac is None and n > self.max_fd_jacobian_size:
            raise fd_jacobian_error(self.name, n)
        opts = dict(opts, lband=n - 1, uband=n - 1)
        if jac is None:
            return None, opts
        rows, cols = _full_band_index(n)
        dense = jac

        def full_band(s, y):
            ab = np.zeros((2 * n - 1, n))
            ab[rows, cols] = np.asarray(dense(s, y), dtype=np.float64).ravel()
            return ab

        return full_band, opts


@functools.lru_cache(maxsize=8)
def _full_band_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Where ``J[i, j]`` (row-major order) goes in the packed band of width ``n - 1``:
    ``ab[n - 1 + i - j, j]``."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return (n - 1 + i - j).ravel(), j.ravel()


class _Dopri(_OdeMethod):
    vector_tolerances = False
    raise_through = False

    def _attach_solout(self, r):
        steps = [None, None]  # previous and current accepted time

        def solout(t, y):
            steps[0], steps[1] = steps[1], t

        r.set_solout(solout)
        return steps

    def _steps(self, rhs, jac, opts, y0, t0, t1, rec):
        """The whole span in one call, every accepted step reported by ``solout``
        with its derivative (one more evaluation per step) for the Hermite
        interpolant; ``solout`` stops the code when the recorder has enough."""
        r = self._make_ode(rhs, None, opts, y0, t0, t1, 2 ** 31 - 1)
        last = {}

        def solout(t, y):
            if last and t == last["t"]:  # a new call starts where the last one ended
                return 0
            y = np.array(y)
            f = rhs(t, y)
            if last:
                row = hermite_row(last["t"], t, last["y"], y, last["f"], f)
                if not rec.on_step(row):
                    return -1
            last.update(t=float(t), y=y, f=f)
            return 0

        r.set_solout(solout)
        self._start(r, y0, t0)
        try:
            return self._dopri_calls(r, rhs, t0, t1, rec)
        finally:
            _sx.release(r, self._scipy_name)

    def _dopri_calls(self, r, rhs, t0, t1, rec):
        info = SolveInfo(method=self.name, t_reached=t0)
        # One call per output time, so that every output time is a step's end (the
        # codes land on it exactly) rather than a point of the interpolant.
        ahead = [float(s) for s in rec.t_out[rec.filled:] if rec.sign * (s - t0) > 0]
        for target in ahead or ([t1] if t1 != t0 else []):
            if not rec.wants_more:
                break
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r.integrate(target)
            except DynamicsFailed:
                break
            code = r.get_return_code()
            if code < 0 and rhs.error is None and rec.wants_more:
                info.success, info.status = False, int(code)
                info.message = _sx.return_message(r, code)
                info.t_reached = float(r.t)
                return info, target
        return info, None

    def _fill_info(self, r, info, stepper):
        integ = _sx.integrator(r)
        info.nsteps += int(integ.iwork[_sx.IWORK_DOPRI_ACCEPTED])  # DOPRI restarts per call
        info.njev = 0
        prev, cur = stepper
        info.last_step = None if prev is None else float(cur - prev)
        info.t_reached = float(r.t)


class Dopri5(_Dopri):
    """Explicit Runge-Kutta 5(4) of Dormand and Prince (``ode('dopri5')``), the
    method torchdiffeq defaults to."""

    name = "dopri5"
    scipy_call = "ode('dopri5')"
    integrator = "dopri5"
    _scipy_name = "dopri5"


class Dop853(_Dopri):
    """Explicit Runge-Kutta 8(5,3) of Dormand and Prince (``ode('dop853')``)."""

    name = "dop853"
    scipy_call = "ode('dop853')"
    integrator = "dop853"
    _scipy_name = "dop853"


class Odeint(Lsoda):
    """``scipy.integrate.odeint`` (ODEPACK LSODA): the exact call of the paper's code.
    Its failures, which SciPy reports only as a warning, are raised as errors. Its
    dense output is LSODA's (the same code)."""

    name = "odeint"
    scipy_call = "odeint (LSODA); dense: LSODA"

    def _run(self, rhs, jac, opts, y0, t):
        o = opts
        info = SolveInfo(method=self.name, t_reached=float(t[0]))
        if len(t) == 1:
            return y0[None].copy(), info, None
        direction = np.sign(t[-1] - t[0])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ys, d = _si.odeint(
                    rhs, y0, t, Dfun=jac, tfirst=True, full_output=True,
                    rtol=self.rtol, atol=self.atol, mxstep=self.max_steps,
                    h0=(o.get("first_step") or 0.0) * direction, hmax=o.get("max_step") or 0.0,
                    hmin=o.get("min_step") or 0.0, ml=o.get("lband"), mu=o.get("uband"),
                    mxordn=o.get("max_order_ns", 12), mxords=o.get("max_order_s", 5),
                )
        except DynamicsFailed:
            return y0[None].copy(), info, None
        # odeint leaves the records of intervals it never started uninitialised (on
        # "illegal input" even the first): only plausible records are read (LSODA's
        # own time may pass an output time by a whole step, so it is no test).
        filled = np.isfinite(d["tcur"]) & (d["nst"] >= 0) & (
            d["nst"] <= self.max_steps * np.arange(1, len(t)))
        reached = filled & ((d["tcur"] - t[1:]) * direction >= 0)
        ok = len(t) - 1 if reached.all() else int(np.argmin(reached))  # intervals done
        k = min(ok, len(t) - 2)  # the record of the last interval attempted
        if not filled[k]:
            k -= 1
        if k >= 0:
            info.nsteps = int(d["nst"][k])
            info.njev = int(d["nje"][k])
            info.last_step = float(d["hu"][k])
            info.t_reached = float(d["tcur"][k])
            used = d["mused"][: k + 1]
            info.nswitches = int(np.count_nonzero(np.diff(used))) if used.size else 0
            info.stiff = bool(np.any(used == 2))
        if ok < len(t) - 1 or "successful" not in d["message"]:
            info.success, info.status, info.message = False, -1, str(d["message"])
            return ys[: ok + 1], info, float(t[min(ok + 1, len(t) - 1)])
        info.t_reached = float(t[-1])
        return ys, info, None


# -- SciPy's pure-Python solvers (reentrant) ------------------------------------------


class Radau(_IvpMethod):
    """Radau IIA of order 5 (SciPy's ``Radau``, pure Python, reentrant): implicit, for
    stiff problems. Takes a dense ``jac`` or per-sample blocks (as a sparse matrix);
    without one it forms a finite-difference Jacobian."""

    name = "radau"
    scipy_call = "Radau (solve_ivp's)"
    integrator = None
    stiff = True
    jacobians = frozenset({"dense", "blocks"})
    fd_jacobian = True
    dense_kind = "radau"
    _ivp_class = _si.Radau


class Rk45(_IvpMethod):
    """Explicit Runge-Kutta 5(4) of Dormand and Prince (SciPy's ``RK45``, pure Python,
    reentrant), with its quartic continuous extension."""

    name = "rk45"
    scipy_call = "RK45 (solve_ivp's)"
    integrator = None
    dense_kind = "rk4"
    _ivp_class = _si.RK45


class Rk23(_IvpMethod):
    """Explicit Runge-Kutta 3(2) of Bogacki and Shampine (SciPy's ``RK23``, pure
    Python, reentrant)."""

    name = "rk23"
    scipy_call = "RK23 (solve_ivp's)"
    integrator = None
    dense_kind = "rk3"
    _ivp_class = _si.RK23


#: The registry: method name -> class.
METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Lsoda, Adams, Bdf, Odeint, Dopri5, Dop853, Radau, Rk45, Rk23)
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
