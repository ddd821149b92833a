"""Adaptive Runge-Kutta pairs run in-graph: the fast path for speed over O(1) memory.

``tf_dopri5`` (Dormand-Prince 5(4)) and ``tf_bosh3`` (Bogacki-Shampine 3(2)) step
inside one ``tf.while_loop``: no host round trip per evaluation, XLA-compilable, and
differentiated by backpropagation through the accepted and rejected steps
(discretise-then-optimise; memory grows with the steps). Every output time is the end
of a step (the step before it is shortened to land there), so the outputs are the
method's own states, not an interpolant's. Error control as SciPy's and torchdiffeq's:
the root mean square of the local error estimate over ``atol + rtol * max(|y|,
|y_new|)``, steps grown or shrunk by ``0.9 * err^(-1/(q+1))`` within [0.2, 10], the
first step by Hairer's rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from solvers_bridge import SolverError


@dataclasses.dataclass(frozen=True)
class Pair:
    """An embedded explicit Runge-Kutta pair with the first-same-as-last property."""

    name: str
    order: int  # of the error estimate's lower method (the step exponent is 1/(order+1))
    c: tuple
    a: tuple
    b: tuple  # the propagated solution (its last stage is f at the new state)
    e: tuple  # b minus the embedded solution's weights: the local error estimate


PAIRS = {
    "tf_dopri5": Pair(
        "tf_dopri5", 4,
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
           (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
           (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
           (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        e=(35 / 384 - 5179 / 57600, 0.0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40)),
    "tf_bosh3": Pair(
        "tf_bosh3", 2,
        c=(0.0, 0.5, 0.75, 1.0),
        a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8)),
}

#: Options of the in-graph adaptive methods.
ADAPTIVE_OPTIONS = frozenset({"max_steps", "first_step", "max_step"})
DEFAULT_MAX_STEPS = 10_000


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)))


def adaptive_odeint(func, y0: tf.Tensor, t: tf.Tensor, method: str, rtol: float, atol: float,
                    max_steps: int = DEFAULT_MAX_STEPS, first_step: float | None = None,
                    max_step: float | None = None):
    """Integrates in-graph with an adaptive pair.

    Returns:
        ``(ys, stats, where)``: ``ys`` of shape ``[len(t), *y0.shape]`` (NaN at output times
        not reached after a failure) and ``stats`` the int64 vector of
        :data:`tfode._stats.STAT_FIELDS`: ``[nfev, 0, accepted steps, 0, status]``
        (status 0, or 1 when the step budget ran out or the step size underflowed),
        and ``where`` ``[t reached, last step, target time, budget exhausted]`` for the
        message of :func:`raise_if_failed`.
    """
    pair = PAIRS[method]
    dtype = y0.dtype
    tt = tf.cast(t, dtype)
    n_t = tt.shape[0] if tt.shape[0] is not None else tf.shape(tt)[0]  # static if known
    sign = tf.sign(tt[-1] - tt[0])
    sign = tf.where(sign == 0, tf.ones_like(sign), sign)
    rtol, atol = tf.constant(rtol, dtype), tf.constant(atol, dtype)
    h_max = tf.constant(np.inf if max_step is None else max_step, dtype)
    eps = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype)
    expo = -1.0 / (pair.order + 1)

    def f(s, y):
        return tf.convert_to_tensor(func(s, y))

    f0 = f(tt[0], y0)
    if first_step is None:  # Hairer, Norsett and Wanner, II.4
        scale = atol + rtol * tf.abs(y0)
        d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
        h0 = tf.where((d0 < 1e-5) | (d1 < 1e-5), tf.constant(1e-6, dtype), 0.01 * d0 / d1)
        h0 = tf.minimum(h0, tf.abs(tt[-1] - tt[0]))
        f1 = f(tt[0] + sign * h0, y0 + sign * h0 * f0)
        d2 = _rms((f1 - f0) / scale) / h0
        h1 = tf.where(tf.maximum(d1, d2) <= 1e-15, tf.maximum(tf.constant(1e-6, dtype), h0 * 1e-3),
                      (0.01 / tf.maximum(d1, d2)) ** (1.0 / (pair.order + 1)))
        h = tf.minimum(100 * h0, h1)
        nfev0 = 2
    else:
        h = tf.constant(first_step, dtype)
        nfev0 = 1
    h = sign * tf.minimum(h, h_max)
    stages = len(pair.c)
    nan = tf.fill(tf.concat([[n_t], tf.shape(y0)], 0), tf.constant(np.nan, dtype))
    ys = tf.tensor_scatter_nd_update(nan, [[0]], y0[None])
    index_shape = tf.concat([[n_t], tf.ones([tf.rank(y0)], tf.int32)], 0)

    def step(s, y, fy, h, i, ys, nfev, accepted, here):
        remaining = tt[i] - s
        land = tf.abs(h) >= tf.abs(remaining)
        h_try = tf.where(land, remaining, h)
        ks = [fy]
        for ci, ai in zip(pair.c[1:], pair.a[1:]):
            yi = y + h_try * tf.add_n([aij * kj for aij, kj in zip(ai, ks) if aij])
            ks.append(f(s + ci * h_try, yi))
        y_new = y + h_try * tf.add_n([bi * ki for bi, ki in zip(pair.b, ks) if bi])
        if pair.b[-1] == 0.0 and pair.c[-1] == 1.0 and pair.a[-1] == pair.b[:-1]:
            f_new = ks[-1]  # first same as last: the last stage is f(s + h, y_new)
        else:  # pragma: no cover - every registered pair is FSAL
            f_new = f(s + h_try, y_new)
        error = h_try * tf.add_n([ei * ki for ei, ki in zip(pair.e, ks) if ei])
        err = _rms(error / (atol + rtol * tf.maximum(tf.abs(y), tf.abs(y_new))))
        ok = err <= 1.0
        factor = tf.where(err == 0, tf.constant(10.0, dtype),
                          tf.clip_by_value(0.9 * err ** expo, 0.2, 10.0))
        h_next = h_try * factor
        # A step shortened to land that was accepted says nothing against the last size.
        h_next = tf.where(ok & land, sign * tf.maximum(tf.abs(h_next), tf.abs(h)), h_next)
        h_next = sign * tf.minimum(tf.abs(h_next), h_max)
        done = ok & land
        hit = tf.reshape(tf.one_hot(i, n_t, on_value=True, off_value=False, dtype=tf.bool),
                         index_shape) & done
        return (tf.where(ok, tf.where(land, tt[i], s + h_try), s),
                tf.where(ok, y_new, y), tf.where(ok, f_new, fy), h_next,
                i + tf.cast(done, tf.int32), tf.where(hit, y_new[None], ys),
                nfev + (stages - 1), accepted + tf.cast(ok, tf.int32),
                tf.where(done, 0, here + 1))

    def going(s, y, fy, h, i, ys, nfev, accepted, here):
        return ((i < n_t) & (here < max_steps)
                & (tf.abs(h) > 16 * eps * tf.maximum(tf.abs(s), 1.0)))

    zero = tf.constant(0, tf.int32)
    state = (tt[0], y0, f0, h, tf.constant(1, tf.int32), ys, tf.constant(nfev0, tf.int32),
             zero, zero)
    s, y, fy, h, i, ys, nfev, accepted, here = tf.while_loop(
        going, step, state,
        maximum_iterations=max_steps * 4 * tf.maximum(n_t - 1, 1))  # rejections included
    status = tf.cast(i < n_t, tf.int64)
    zero64 = tf.constant(0, tf.int64)
    stats = tf.stack([tf.cast(nfev, tf.int64), zero64, tf.cast(accepted, tf.int64), zero64,
                      status])
    where = tf.stack([s, h, tt[tf.minimum(i, n_t - 1)], tf.cast(here >= max_steps, dtype)])
    return ys, stats, where


def raise_if_failed(method: str, stats, where) -> None:
    """Raises the :class:`SolverError` of a failed in-graph solve (eagerly)."""
    nfev, _, accepted, _, status = (int(v) for v in stats.numpy())
    if not status:
        return
    s, h, target, budget = (float(v) for v in where.numpy())
    raise SolverError(
        f"The '{method}' solver failed at t={s!r} while integrating towards t={target!r} "
        f"(last step size {h!r}, {accepted} steps, {nfev} evaluations): "
        + ("the step budget was exhausted: raise options['max_steps']." if budget else
           "the step size underflowed: the dynamics are probably stiff or blow up; use "
           "'bdf', 'radau' or 'lsoda'."),
        method=method, t=s, step=h)
