"""Adaptive Runge-Kutta pairs run in-graph: the fast path for speed over O(1) memory.

``tf_dopri5`` (Dormand-Prince 5(4)) and ``tf_bosh3`` (Bogacki-Shampine 3(2)) step
inside one ``tf.while_loop``: no host round trip per evaluation, XLA-compilable, and
differentiated by backpropagation through the accepted and rejected steps
(discretise-then-optimise; memory grows with the steps). By default the steps run
free of the output times and each output is read off the step that covers it by the
pair's dense output (DOPRI5's fourth-order interpolant, as in torchdiffeq; a cubic
Hermite for Bogacki-Shampine): many close output times then cost no extra steps.
With ``options={"interpolate": False}`` every output time is the end of a step (the
step before it is shortened to land there), so the outputs are the method's own
states. Under XLA (``tf.function(jit_compile=True)``) ``max_steps`` bounds every step
of the solve, rejected ones included, because XLA preallocates the backward pass's loop
stacks for the largest count of steps the loop may take: a gradient there needs
``max_steps`` given, near what the solve takes. Error control as SciPy's and torchdiffeq's:
the root mean square of the local error estimate over ``atol + rtol * max(|y|,
|y_new|)``, steps grown or shrunk by ``0.9 * err^(-1/(q+1))`` within [0.2, 10], the
first step by Hairer's rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from solvers_bridge import SolverError
from tfode._tf_internals import in_xla_context


@dataclasses.dataclass(frozen=True)
class Pair:
    """An embedded explicit Runge-Kutta pair with the first-same-as-last property."""

    name: str
    order: int  # of the error estimate's lower method (the step exponent is 1/(order+1))
    c: tuple
    a: tuple
    b: tuple  # the propagated solution (its last stage is f at the new state)
    e: tuple  # b minus the embedded solution's weights: the local error estimate
    mid: tuple = ()  # weights of the dense output's midpoint (none: cubic Hermite)


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
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40),
        # Shampine's midpoint of the continuous extension (Hairer's DOPRI5 dense output).
        mid=(6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2,
             -2691868925 / 45128329728 / 2, 187940372067 / 1594534317056 / 2,
             -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2)),
    "tf_bosh3": Pair(
        "tf_bosh3", 2,
        c=(0.0, 0.5, 0.75, 1.0),
        a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8)),
}

#: Options of the in-graph adaptive methods.
ADAPTIVE_OPTIONS = frozenset({"max_steps", "first_step", "max_step", "interpolate"})
DEFAULT_MAX_STEPS = 10_000


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)))


def _dense_output(pair: Pair, y, y_new, fy, f_new, ks, h):
    """The step's interpolant as a function of ``theta`` in [0, 1]."""
    if pair.mid:  # quartic through y, y_mid, y_new with the end slopes
        y_mid = y + h * tf.add_n([m * k for m, k in zip(pair.mid, ks) if m])
        a = 2 * h * (f_new - fy) - 8 * (y_new + y) + 16 * y_mid
        b = h * (5 * fy - 3 * f_new) + 18 * y + 14 * y_new - 32 * y_mid
        c = h * (f_new - 4 * fy) - 11 * y - 5 * y_new + 16 * y_mid
        d = h * fy
        return lambda x: y + x * (d + x * (c + x * (b + x * a)))
    dy = y_new - y  # cubic Hermite

    def hermite(x):
        return y + x * (h * fy + x * ((3 * dy - h * (2 * fy + f_new))
                                      + x * (h * (fy + f_new) - 2 * dy)))

    return hermite


def adaptive_odeint(func, y0: tf.Tensor, t: tf.Tensor, method: str, rtol: float, atol: float,
                    max_steps: int | None = None, first_step: float | None = None,
                    max_step: float | None = None, interpolate: bool = True):
    """Integrates in-graph with an adaptive pair (outputs from the dense output, or,
    with ``interpolate=False``, at steps landing on them).

    ``max_steps`` (default :data:`DEFAULT_MAX_STEPS`) bounds the steps of each output
    interval; under XLA it bounds all steps, rejected ones included, and a gradient
    needs it given (see :func:`_xla_gradient_guard`).

    Returns:
        ``(ys, stats, where)``: ``ys`` of shape ``[len(t), *y0.shape]`` (NaN at output times
        not reached after a failure) and ``stats`` the int64 vector of
        :data:`tfode._stats.STAT_FIELDS`: ``[nfev, 0, accepted steps, 0, status]``
        (status 0, or 1 when the step budget ran out or the step size underflowed),
        and ``where`` ``[t reached, last step, target time, budget exhausted]`` for the
        message of :func:`raise_if_failed`.
    """
    pair = PAIRS[method]
    xla = in_xla_context()
    guard = xla and max_steps is None
    max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
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
    h = tf.stop_gradient(sign * tf.minimum(h, h_max))
    stages = len(pair.c)
    if not isinstance(interpolate, (bool, np.bool_)):
        raise TypeError(f"interpolate must be True or False; got {interpolate!r}.")
    outputs = tf.TensorArray(dtype, size=n_t, element_shape=y0.shape, clear_after_read=False)
    outputs = outputs.write(0, y0)
    t_end = tt[-1]

    def step(s, y, fy, h, i, outputs, nfev, accepted, here):
        target = tt[i] if not interpolate else t_end  # where a step must not pass
        remaining = target - s
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
        # The controller's proposal is a constant to the gradient: what is
        # differentiated is the solution for the steps taken. (Through the controller,
        # a parameter would move the step ends, and an output read off a step would
        # move against the state: a spurious term, 1e-2 of a latent ODE's gradient.)
        h_next = tf.stop_gradient(sign * tf.minimum(tf.abs(h_next), h_max))
        s_new = tf.where(land, target, s + h_try)
        if interpolate:
            # Every output the accepted step covers, from its dense output (the step's
            # end itself exactly).
            dense = _dense_output(pair, y, y_new, fy, f_new, ks, h_try)

            def covered(j, out):
                return (j < n_t) & ok & (sign * (tt[tf.minimum(j, n_t - 1)] - s_new) <= 0)

            def read(j, out):
                at_end = tt[j] == s_new
                value = tf.where(at_end, y_new, dense((tt[j] - s) / h_try))
                return j + 1, out.write(j, value)

            i_new, outputs = tf.while_loop(covered, read, (i, outputs), maximum_iterations=n_t)
            done = i_new > i
        else:
            done = ok & land
            outputs = tf.cond(done, lambda: outputs.write(i, y_new), lambda: outputs)
            i_new = i + tf.cast(done, tf.int32)
        return (tf.where(ok, s_new, s), tf.where(ok, y_new, y), tf.where(ok, f_new, fy),
                h_next, i_new, outputs, nfev + (stages - 1), accepted + tf.cast(ok, tf.int32),
                tf.where(done, 0, here + 1))

    def going(s, y, fy, h, i, outputs, nfev, accepted, here):
        return ((i < n_t) & (here < max_steps)
                & (tf.abs(h) > 16 * eps * tf.maximum(tf.abs(s), 1.0)))

    zero = tf.constant(0, tf.int32)
    state = (tt[0], y0, f0, h, tf.constant(1, tf.int32), outputs, tf.constant(nfev0, tf.int32),
             zero, zero)
    # Outside XLA the bound only stops a runaway loop (rejections included); under XLA
    # it sizes the gradient's preallocated stacks, so it is the step budget itself.
    bound = max_steps if xla else max_steps * 4 * tf.maximum(n_t - 1, 1)
    s, y, fy, h, i, outputs, nfev, accepted, here = tf.while_loop(
        going, step, state, maximum_iterations=bound)
    reached = tf.reshape(tf.range(n_t) < i, tf.concat([[n_t], tf.ones([tf.rank(y0)], tf.int32)],
                                                      0))
    ys = tf.where(reached, outputs.stack(), tf.constant(np.nan, dtype))
    status = tf.cast(i < n_t, tf.int64)
    zero64 = tf.constant(0, tf.int64)
    stats = tf.stack([tf.cast(nfev, tf.int64), zero64, tf.cast(accepted, tf.int64), zero64,
                      status])
    tries = (nfev - nfev0) // (stages - 1)  # steps taken, rejected ones included
    budget = (here >= max_steps) | (tries >= bound)
    where = tf.stack([s, h, tt[tf.minimum(i, n_t - 1)], tf.cast(budget, dtype)])
    if guard:
        ys = _xla_gradient_guard(method, y0, stages)(ys)
    return ys, stats, where


def _xla_gradient_guard(method: str, y0: tf.Tensor, stages: int):
    """An identity whose gradient, when it is built, refuses to differentiate an XLA
    solve with the default step budget: XLA would preallocate the backward pass's loop
    stacks for all :data:`DEFAULT_MAX_STEPS` steps (for a 128 x 64 state, 44 GiB
    asked for; for a 128 x 2 one, 1.5 s per call against 5 ms without XLA)."""
    floor = DEFAULT_MAX_STEPS * (stages + 2) * y0.shape.num_elements() * y0.dtype.size \
        if y0.shape.is_fully_defined() else None

    @tf.custom_gradient
    def guarded(ys):
        def grad(dy):
            size = f"at least {floor / 2 ** 30:.2g} GiB for this state, " if floor else ""
            raise ValueError(
                f"Differentiating method={method!r} inside an XLA-compiled function "
                "(jit_compile=True) needs options={'max_steps': N}: XLA preallocates the "
                "backward pass's loop stacks for every step the loop may take, and the "
                f"default budget of {DEFAULT_MAX_STEPS:,} steps costs {size}and time in "
                "proportion on every call. Set N a little above the steps the solve takes "
                "(rejected ones included; SolveStats reports the accepted ones), or drop "
                "jit_compile: tf.function without XLA preallocates nothing.")

        return tf.identity(ys), grad

    return guarded


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
