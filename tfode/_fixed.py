"""Fixed-step Runge-Kutta methods run in-graph (the paper's RK-Net baseline).

They backpropagate through their own operations, so memory grows with the number
of steps (O(L~) in Table 1), unlike the adjoint of the SciPy methods.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

#: Butcher tableaux (c, a, b) of the fixed-step methods.
TABLEAUX = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "rk4": ((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
            (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}

FIXED_OPTIONS = frozenset({"step_size", "num_steps"})


def steps_per_interval(t, step_size=None, num_steps=None) -> list[int]:
    """Number of equal steps in each output interval.

    ``num_steps`` steps per interval, or enough steps that none exceeds
    ``step_size`` (which needs the times known when the graph is built); one step
    per interval by default.
    """
    n_intervals = int(t.shape[0]) - 1
    if step_size is not None and num_steps is not None:
        raise ValueError("Give step_size or num_steps for a fixed-step method, not both.")
    if num_steps is not None:
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be a positive integer; got {num_steps!r}.")
        return [int(num_steps)] * n_intervals
    if step_size is None:
        return [1] * n_intervals
    if not (np.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number; got {step_size!r}.")
    values = tf.get_static_value(t)
    if values is None:
        raise ValueError("step_size needs the output times when the graph is built, but t is "
                         "symbolic here; pass num_steps (steps per output interval) instead.")
    return [max(1, math.ceil(abs(float(b - a)) / step_size - 1e-12))
            for a, b in zip(values[:-1], values[1:])]


def fixed_odeint(func, y0: tf.Tensor, t: tf.Tensor, method: str, counts: list[int]):
    """Integrates with a fixed-step method in-graph; returns ``(ys, nfev)``."""
    c, a, b = TABLEAUX[method]
    tt = tf.cast(t, y0.dtype)
    ys = [y0]
    y = y0
    for i, steps in enumerate(counts):
        h = (tt[i + 1] - tt[i]) / steps
        for k in range(steps):
            t0 = tt[i] + k * h
            ks = []
            for ci, ai in zip(c, a):
                yi = y
                for aij, kj in zip(ai, ks):
                    if aij:
                        yi = yi + (h * aij) * kj
                ks.append(tf.convert_to_tensor(func(t0 + ci * h, yi)))
            y = y + h * tf.add_n([bi * ki for bi, ki in zip(b, ks) if bi])
        ys.append(y)
    return tf.stack(ys), len(c) * sum(counts)
