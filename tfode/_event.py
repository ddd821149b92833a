"""``tfode.odeint_event``: integrate until an event, with a differentiable event time.

The event time ``t*`` solves ``g(t*, y(t*)) = 0``. It is located by the bridge on the
dense output of the chosen method itself (the same integrator as :func:`tfode.odeint`
with that name; counted evaluations, shape and finiteness checks, the nesting guard),
and the state returned there comes from that integrator, on the event surface to
root-finding precision. That one forward solve also serves the gradient: the state's
is the chosen adjoint's at the fixed time ``t*``, and the gradient of ``t*`` with
respect to the initial state, the dynamics' parameters and the event function's own
parameters follows from the implicit function theorem: with ``v = dg/dy``,
``D = dg/dt + v . f(t*, y*)`` and incoming cotangents ``(l_t, l_y)``, the cotangent of
``y(t*)`` at fixed time becomes ``l_y - c v`` and the event parameters get
``-c dg/dphi``, where ``c = (l_t + l_y . f(t*, y*)) / D``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfode._odeint import _Op, check_state, refuse_legacy_arguments

_F64 = tf.float64
_OP_ARGUMENTS = ("options", "adjoint", "variables", "stats", "jit_compile")


@dataclasses.dataclass
class _Event:
    """The event as the bridge takes it: ``fun(t, y_flat) -> float`` and the search."""

    fun: Callable
    t_max: float
    direction: float
    terminal: bool


def odeint_event(func: Callable, y0, t0, event_fn: Callable, *, t_max: float,
                 direction: float = 0.0, terminal: bool = True, method: str = "lsoda",
                 rtol=None, atol=None, **odeint_kwargs):
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
        method: Any adaptive method of :func:`tfode.odeint` (``lsoda``, ``adams``,
            ``bdf``, ``odeint``, ``dopri5``, ``dop853``, ``radau``, ``rk45``,
            ``rk23``); the event is located on its own dense output.
        rtol, atol: Tolerances; by default those of :func:`tfode.odeint` for
            ``y0``'s dtype.
        **odeint_kwargs: ``options``, ``adjoint``, ``variables``, ``stats`` and
            ``jit_compile``, as for :func:`tfode.odeint`.

    Returns:
        ``(t_event, y_event)``: the first event time (float64 scalar) and the state
        there, both differentiable; with ``terminal=False`` the times ``[K]`` and
        states ``[K, *y0.shape]`` of all ``K`` events.

    Raises:
        ValueError: no event between ``t0`` and ``t_max``, or bad input.
    """
    refuse_legacy_arguments({k: v for k, v in odeint_kwargs.items() if k not in _OP_ARGUMENTS},
                            "odeint_event")
    y0 = check_state(y0)
    t0 = tf.cast(t0, _F64) if isinstance(t0, (tf.Tensor, tf.Variable)) else tf.constant(
        np.float64(t0))
    if not terminal and not tf.executing_eagerly():
        raise NotImplementedError(
            "odeint_event(terminal=False) runs eagerly only (the number of events is known "
            "only after the solve); call it outside tf.function, or use terminal=True.")
    kw = {k: odeint_kwargs.get(k) for k in _OP_ARGUMENTS}
    op = _Op(func, y0, method, rtol, atol, dict(kw["options"] or {}),
             kw["adjoint"] or "backsolve", kw["variables"], kw["stats"],
             "auto" if kw["jit_compile"] is None else kw["jit_compile"])
    event_fun, event_variables = _event_callback(event_fn, y0)
    event = _Event(event_fun, float(t_max), float(direction), bool(terminal))
    t_out, ys = op.solve_to_event(y0, t0, event)
    if terminal:
        return _reroute(func, event_fn, t_out[1], ys[1], event_variables)
    pairs = [_reroute(func, event_fn, t_out[k], ys[k], event_variables)
             for k in range(1, int(t_out.shape[0]))]
    return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])


def _event_callback(event_fn, y0):
    """The event function as a NumPy callback on the flat float64 state (traced once),
    and the trainable variables it reads."""
    shape, dtype = tuple(y0.shape), y0.dtype
    with tf.GradientTape() as tape:
        probe = event_fn(tf.constant(0.0, dtype), y0)
    variables = [v for v in tape.watched_variables() if v.trainable]
    if np.prod(tf.convert_to_tensor(probe).shape) != 1:
        raise ValueError(
            f"event_fn returned a tensor of shape {tf.convert_to_tensor(probe).shape}; it "
            "must return one number g(t, y) whose zero is the event (reduce a vector "
            "condition to a scalar, e.g. with tf.reduce_min).")

    @tf.function(input_signature=[tf.TensorSpec([], _F64), tf.TensorSpec([None], _F64)])
    def g(t, y):
        out = event_fn(tf.cast(t, dtype), tf.reshape(tf.cast(y, dtype), shape))
        return tf.cast(tf.reshape(out, []), _F64)

    def fun(t, y):
        return float(g(tf.constant(t, _F64), tf.constant(y)).numpy())

    return fun, variables


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
