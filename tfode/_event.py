"""``tfode.odeint_event``: integrate until an event, with a differentiable event time.

The event time ``t*`` solves ``g(t*, y(t*)) = 0``. It is located by SciPy's
``solve_ivp`` event machinery; the state there comes from :func:`tfode.odeint` on
``[t0, t*]`` (so its gradient is the chosen adjoint's); and the gradient of ``t*``
with respect to the initial state, the dynamics' parameters and the event function's
own parameters follows from the implicit function theorem: with ``v = dg/dy``,
``D = dg/dt + v . f(t*, y*)`` and incoming cotangents ``(l_t, l_y)``, the cotangent of
``y(t*)`` at fixed time becomes ``l_y - c v`` and the event parameters get
``-c dg/dphi``, where ``c = (l_t + l_y . f(t*, y*)) / D``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from scipy.integrate import solve_ivp

import solvers_bridge as sb
from tfode._compile import compile_dynamics
from tfode._odeint import odeint

_F64 = tf.float64


def odeint_event(func: Callable, y0, t0, event_fn: Callable, *, t_max: float,
                 direction: float = 0.0, terminal: bool = True, method: str = "lsoda",
                 rtol=sb.DEFAULT_RTOL, atol=sb.DEFAULT_ATOL, **odeint_kwargs):
    """Integrates ``dy/dt = func(t, y)`` from ``t0`` until ``event_fn(t, y) = 0``.

    Args:
        func: The dynamics, as for :func:`tfode.odeint`.
        y0: Initial state.
        t0: Initial time.
        event_fn: ``event_fn(t, y) -> scalar`` built from TensorFlow ops; its trainable
            variables get gradients too.
        t_max: The search stops here; no event before it is an error.
        direction: Only crossings with this sign of slope count (0: any).
        terminal: Stop at the first event (default). ``False`` returns every event
            before ``t_max`` (eager mode only: their number is known only after the
            solve).
        method: Solver (``lsoda``, ``bdf``, ``dop853``, ... as for
            :func:`tfode.odeint`); the event is located with SciPy ``solve_ivp``'s
            method of the same name where there is one (else LSODA).
        rtol, atol: Tolerances of both solves.
        **odeint_kwargs: Further arguments of the :func:`tfode.odeint` call on
            ``[t0, t*]`` (``adjoint``, ``options``, ``stats``, ...).

    Returns:
        ``(t_event, y_event)``: the first event time (float64 scalar) and the state
        there, both differentiable; with ``terminal=False`` the times ``[K]`` and
        states ``[K, *y0.shape]`` of all ``K`` events.

    Raises:
        ValueError: no event between ``t0`` and ``t_max``, or bad input.
    """
    y0 = tf.convert_to_tensor(y0)
    if not y0.dtype.is_floating:
        raise TypeError(f"y0 must be a float tensor; got dtype {y0.dtype.name}.")
    t0 = tf.cast(tf.convert_to_tensor(t0), _F64)
    t_max = float(t_max)
    locate = _Locator(func, event_fn, y0, direction, method, rtol, atol, t_max, terminal)
    y_flat = tf.reshape(tf.cast(y0, _F64), [-1])
    if not terminal:
        if not tf.executing_eagerly():
            raise NotImplementedError(
                "odeint_event(terminal=False) runs eagerly only (the number of events is "
                "known only after the solve); call it outside tf.function, or use "
                "terminal=True.")
        times = tf.constant(locate(y_flat.numpy(), t0.numpy()), _F64)
        ys = odeint(func, y0, tf.concat([[t0], times], 0), method=method, rtol=rtol,
                    atol=atol, **odeint_kwargs)[1:]
        pairs = [_reroute(func, event_fn, times[k], ys[k], locate.event_variables)
                 for k in range(int(times.shape[0]))]
        return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])
    if tf.executing_eagerly():
        t_star = tf.constant(locate(y_flat.numpy(), t0.numpy()), _F64)
    else:
        t_star = tf.numpy_function(locate, [y_flat, t0], _F64, stateful=True, name="event")
        t_star.set_shape([])
    t_star = tf.stop_gradient(t_star)
    y_star = odeint(func, y0, tf.stack([t0, t_star]), method=method, rtol=rtol, atol=atol,
                    **odeint_kwargs)[-1]
    return _reroute(func, event_fn, t_star, y_star, locate.event_variables)


class _Locator:
    """The NumPy side: locates the first event with ``solve_ivp``."""

    def __init__(self, func, event_fn, y0, direction, method, rtol, atol, t_max,
                 terminal=True):
        self.shape, self.dtype = tuple(y0.shape), y0.dtype
        self.t_max, self.rtol, self.atol = t_max, rtol, atol
        self.ivp = sb.DENSE_METHODS.get(method, "LSODA")
        with tf.GradientTape() as tape:
            event_fn(tf.constant(0.0, self.dtype), y0)
        self.event_variables = [v for v in tape.watched_variables() if v.trainable]
        self.fun = compile_dynamics(func, self.dtype, y0.shape, "solve_ivp", None,
                                    False).callbacks(self.shape).fun
        shape, dtype = self.shape, self.dtype

        @tf.function(input_signature=[tf.TensorSpec([], _F64), tf.TensorSpec([None], _F64)])
        def g(t, y):
            out = event_fn(tf.cast(t, dtype), tf.reshape(tf.cast(y, dtype), shape))
            return tf.cast(tf.reshape(out, []), _F64)

        def event(t, y):
            return float(g(tf.constant(t, _F64), tf.constant(y)).numpy())

        event.terminal, event.direction = bool(terminal), float(direction)
        self.terminal = bool(terminal)
        self.event = event

    def __call__(self, y0, t0):
        res = solve_ivp(self.fun, (float(t0), self.t_max), np.asarray(y0, np.float64),
                        method=self.ivp, events=self.event, rtol=self.rtol, atol=self.atol)
        if res.status == -1:
            raise sb.SolverError(f"The solver failed while looking for the event: "
                                 f"{res.message}", method=self.ivp.lower(), t=float(res.t[-1]),
                                 step=None, solver_message=str(res.message))
        if res.t_events[0].size == 0:
            raise ValueError(
                f"No event: event_fn did not cross zero (direction {self.event.direction:g}) "
                f"between t0={float(t0)!r} and t_max={self.t_max!r}. Raise t_max or check "
                "the event function's sign.")
        if self.terminal:
            return np.float64(res.t_events[0][0])
        return np.asarray(res.t_events[0], dtype=np.float64)


def _reroute(func, event_fn, t_star, y_star, event_variables):
    """Identity on ``(t*, y*)`` whose gradient applies the implicit function theorem."""
    params = [tf.convert_to_tensor(v) for v in event_variables]

    @tf.custom_gradient
    def reroute(t, y, *_):
        def grad(dt, dy):
            ts = tf.cast(t, y.dtype)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([ts, y, *event_variables])
                g = tf.reshape(event_fn(ts, y), [])
            g_t, g_y, *g_vars = tape.gradient(
                g, [ts, y, *event_variables],
                unconnected_gradients=tf.UnconnectedGradients.ZERO)
            f = tf.convert_to_tensor(func(ts, y))
            dt = tf.zeros([], y.dtype) if dt is None else tf.cast(dt, y.dtype)
            dy = tf.zeros_like(y) if dy is None else dy
            slope = g_t + tf.reduce_sum(g_y * f)
            c = (dt + tf.reduce_sum(dy * f)) / slope
            return [tf.zeros_like(t), dy - c * g_y] + [-c * tf.cast(gv, p.dtype)
                                                        for gv, p in zip(g_vars, params)]

        return (tf.identity(t), tf.identity(y)), grad

    return reroute(t_star, y_star, *params)
