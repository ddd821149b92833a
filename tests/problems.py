"""A catalogue of ODE problems with exact solutions, shared by every test.

Each problem gives the dynamics in NumPy and in TensorFlow (with its parameters as
variables), its closed-form solution, and the gradient of a linear loss
``L = sum_i w_i . y(t_i)`` computed from the closed form alone: by an analytic
formula where there is a short one, otherwise by central differences of the
closed form (an independent truth: no ODE solver is involved).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import scipy.linalg


@dataclasses.dataclass
class Problem:
    name: str
    y0: np.ndarray
    params: np.ndarray
    f: Callable  # f(t, y, p) in NumPy
    exact: Callable  # exact(t_array, t0, y0, p) -> (len(t), n)
    tf_f: Callable  # tf_f(t, y, p_variable) in TensorFlow

    def loss_grads(self, t, w, h=1e-6):
        """dL/dy0, dL/dp and dL/dt for L = sum(w * exact(t)), by central differences
        of the closed form."""
        t = np.asarray(t, dtype=np.float64)

        def loss(y0, p, tt):
            return float(np.sum(w * self.exact(tt, tt[0], y0, p)))

        def central(fn, x):
            g = np.zeros_like(x)
            for i in range(x.size):
                e = np.zeros_like(x)
                e.flat[i] = h * max(1.0, abs(x.flat[i]))
                g.flat[i] = (fn(x + e) - fn(x - e)) / (2 * e.flat[i])
            return g

        gy0 = central(lambda y: loss(y, self.params, t), self.y0)
        gp = central(lambda p: loss(self.y0, p, t), self.params)
        gt = central(lambda tt: loss(self.y0, self.params, tt), t)
        return gy0, gp, gt

    def tf_variable_and_func(self):
        """``(p, func)``: the parameters as a float64 variable and ``func(t, y)`` in
        TensorFlow reading it."""
        tf = _tf()
        p = tf.Variable(self.params, dtype=tf.float64)
        return p, (lambda t, y: self.tf_f(t, y, p))

    def vjp(self, t, y, a):
        """The flat ``[f, a^T f_y, a^T f_t, a^T f_p]`` of the bridge contract, by
        central differences of ``f`` (fine for these smooth problems)."""
        h = 1e-6
        f0 = self.f(t, y, self.params)
        jy = np.stack([(self.f(t, y + h * e, self.params) - self.f(t, y - h * e, self.params))
                       / (2 * h) for e in np.eye(y.size)], axis=1)
        jt = (self.f(t + h, y, self.params) - self.f(t - h, y, self.params)) / (2 * h)
        jp = np.stack([(self.f(t, y, self.params + h * e) - self.f(t, y, self.params - h * e))
                       / (2 * h) for e in np.eye(self.params.size)], axis=1)
        return np.concatenate([f0, a @ jy, [a @ jt], a @ jp])


def _linear_matrix(p):
    # A rotation with decay: eigenvalues -p0 +- i p1 and -p2.
    return np.array([[-p[0], p[1], 0.0], [-p[1], -p[0], 0.0], [0.3, 0.0, -p[2]]])


def _tf():
    import tensorflow as tf
    return tf


def _tf_linear(t, y, p):
    tf = _tf()
    a = tf.stack([tf.stack([-p[0], p[1], tf.zeros_like(p[0])]),
                  tf.stack([-p[1], -p[0], tf.zeros_like(p[0])]),
                  tf.stack([0.3 * tf.ones_like(p[0]), tf.zeros_like(p[0]), -p[2]])])
    return tf.linalg.matvec(a, y)


CATALOGUE = [
    Problem(
        name="decay",  # y' = -k y
        y0=np.array([1.0, -2.0]),
        params=np.array([0.8]),
        f=lambda t, y, p: -p[0] * y,
        exact=lambda t, t0, y0, p: np.exp(-p[0] * (np.asarray(t) - t0))[:, None] * y0,
        tf_f=lambda t, y, p: -p[0] * y,
    ),
    Problem(
        name="linear",  # y' = A y, y(t) = expm(A (t - t0)) y0
        y0=np.array([1.0, 0.5, -1.0]),
        params=np.array([0.3, 2.0, 0.7]),
        f=lambda t, y, p: _linear_matrix(p) @ y,
        exact=lambda t, t0, y0, p: np.stack(
            [scipy.linalg.expm(_linear_matrix(p) * (s - t0)) @ y0 for s in np.asarray(t)]),
        tf_f=_tf_linear,
    ),
    Problem(
        name="time_dependent",  # y' = p0 cos(p1 t) y, y = y0 exp(p0/p1 (sin p1 t - sin p1 t0))
        y0=np.array([0.7, 1.3]),
        params=np.array([1.5, 2.0]),
        f=lambda t, y, p: p[0] * np.cos(p[1] * t) * y,
        exact=lambda t, t0, y0, p: np.exp(
            p[0] / p[1] * (np.sin(p[1] * np.asarray(t)) - np.sin(p[1] * t0)))[:, None] * y0,
        tf_f=lambda t, y, p: p[0] * _tf().cos(p[1] * t) * y,
    ),
    Problem(
        name="riccati",  # y' = -p y^2, y = y0 / (1 + p y0 (t - t0))
        y0=np.array([1.0, 0.5]),
        params=np.array([0.3]),  # singular at t0 - 1/(p y0): outside [-1.7, 1.7]
        f=lambda t, y, p: -p[0] * y * y,
        exact=lambda t, t0, y0, p: y0 / (1.0 + p[0] * y0 * (np.asarray(t) - t0)[:, None]),
        tf_f=lambda t, y, p: -p[0] * y * y,
    ),
]

BY_NAME = {p.name: p for p in CATALOGUE}


def riccati_analytic_grads(t, w, y0, p):
    """Analytic gradients of L = sum_i w_i . y(t_i) for the Riccati problem."""
    t = np.asarray(t, dtype=np.float64)
    tau = (t - t[0])[:, None]
    den = 1.0 + p * y0 * tau
    y = y0 / den
    gy0 = np.sum(w / den**2, axis=0)
    gp = np.array([np.sum(w * (-(y0**2) * tau / den**2))])
    gt = np.sum(w * (-p * y * y), axis=1)  # dy_i/dt_i = f(y_i)
    gt[0] = np.sum((w * (p * y0**2 / den**2))[1:])  # dy_i/dt0 (y(t0) = y0 for i = 0)
    return gy0, gp, gt
