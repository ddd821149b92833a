"""The catalogue of the benchmark problems, shared by the benchmarks, the comparison
and the tests.

* :class:`SpiralMLP`: B1's 2-D spiral dynamics ``f(y) = tanh(y^3 W1 + b1) W2 + b2``
  in NumPy with its hand-written VJP (the floor the bridge is measured against; its
  Keras and PyTorch twins are built from the same weights).
* :func:`stiff_problem`: the stiff MLP ``f(y) = Dense(32 -> 4)(tanh(Dense(4 -> 32)(y)))
  - diag(1, 10, 100, 1000) y`` and its reference gradient :func:`rk4_reference`
  (backpropagation through 20,000 in-graph RK4 steps).

The ODE problems with closed-form solutions that the unit tests use are in
``tests/problems.py``.
"""

from __future__ import annotations

import numpy as np


class SpiralMLP:
    """B1's dynamics f(y) = tanh(y^3 W1 + b1) W2 + b2 in NumPy, with its VJP."""

    def __init__(self, seed: int = 0, batch: int = 1000, hidden: int = 50,
                 y0_dist: str = "normal"):
        rng = np.random.default_rng(seed)
        self.w1 = rng.normal(0, 0.1, (2, hidden))
        self.b1 = np.zeros(hidden)
        self.w2 = rng.normal(0, 0.1, (hidden, 2))
        self.b2 = np.zeros(2)
        if y0_dist == "normal":
            self.y0 = rng.normal(0, 1, (batch, 2))
        elif y0_dist == "uniform":
            self.y0 = rng.uniform(-1, 1, (batch, 2))
        else:
            raise ValueError(f"y0_dist must be 'normal' or 'uniform'; got {y0_dist!r}.")
        self.shape = self.y0.shape
        self.n_params = self.w1.size + self.b1.size + self.w2.size + self.b2.size

    def params(self):
        return [self.w1, self.b1, self.w2, self.b2]

    def fun(self, t, y):
        y = y.reshape(self.shape)
        return (np.tanh((y ** 3) @ self.w1 + self.b1) @ self.w2 + self.b2).ravel()

    def vjp(self, t, y, a):
        y, a = y.reshape(self.shape), a.reshape(self.shape)
        y3 = y ** 3
        h = np.tanh(y3 @ self.w1 + self.b1)
        out = h @ self.w2 + self.b2
        gz = (a @ self.w2.T) * (1.0 - h * h)
        gy = (gz @ self.w1.T) * 3.0 * y * y
        return np.concatenate([out.ravel(), gy.ravel(), [0.0], (y3.T @ gz).ravel(),
                               gz.sum(0), (h.T @ a).ravel(), a.sum(0)])


STIFFNESS = (1.0, 10.0, 100.0, 1000.0)
TIMES = np.linspace(0.0, 2.0, 5)


def stiff_problem(seed: int = 0, batch: int = 8):
    """``(dynamics, y0, t)``: the stiff MLP as a float64 Keras layer ``f(t, y)``, the
    initial states and the output times."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)

    class StiffMLP(keras.layers.Layer):
        def __init__(self):
            super().__init__(dtype="float64")
            self.hidden = keras.layers.Dense(32, activation="tanh", dtype="float64")
            self.out = keras.layers.Dense(4, dtype="float64")
            self.hidden.build((None, 4))
            self.out.build((None, 32))
            self.decay = tf.constant(STIFFNESS, tf.float64)

        def call(self, t, y):
            return self.out(self.hidden(y)) - self.decay * y

    y0 = np.random.default_rng(seed).normal(size=(batch, 4))
    return StiffMLP(), tf.constant(y0), tf.constant(TIMES)


def rk4_reference(func, y0, t, step: float = 1e-4):
    """Loss and gradients (y0, weights) by backpropagation through RK4 in a
    ``tf.while_loop`` (one compiled loop per output interval)."""
    import tensorflow as tf

    variables = func.trainable_variables

    @tf.function
    def interval(y, t0, t1):
        n = tf.cast(tf.math.ceil((t1 - t0) / step - 1e-9), tf.int32)
        h = (t1 - t0) / tf.cast(n, tf.float64)

        def body(k, y):
            s = t0 + tf.cast(k, tf.float64) * h
            k1 = func(s, y)
            k2 = func(s + h / 2, y + h / 2 * k1)
            k3 = func(s + h / 2, y + h / 2 * k2)
            k4 = func(s + h, y + h * k3)
            return k + 1, y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

        return tf.while_loop(lambda k, y: k < n, body, [0, y])[1]

    with tf.GradientTape() as tape:
        tape.watch(y0)
        ys, y = [y0], y0
        for i in range(len(t) - 1):
            y = interval(y, t[i], t[i + 1])
            ys.append(y)
        loss = tf.reduce_sum(tf.stack(ys) ** 2)
    grads = tape.gradient(loss, [y0, *variables])
    return float(loss), [g.numpy() for g in grads]
