"""Continuous normalizing flows (Section 4 of the paper) and the planar-flow baseline.

Theorem 1 (instantaneous change of variables): for dz/dt = f(t, z),
d log p(z(t))/dt = -tr(df/dz). :class:`CNF` integrates ``[z, log p]`` together
through :func:`tfode.odeint` (the adjoint gives the gradients), with the trace
computed exactly (a batch Jacobian: D vector-Jacobian products) or by Hutchinson's
estimator ``e^T (df/dz) e`` with Rademacher or Gaussian probes ``e`` drawn once per
solve and carried in the state (de/dt = 0), so forward and backward passes see the
same probe.

Conventions: the base density lives at ``t0``, the data at ``t1``.
:meth:`CNF.log_prob` integrates data from ``t1`` back to ``t0``;
:meth:`CNF.sample` integrates base samples from ``t0`` to ``t1`` and returns their
log-density too (what KL(q || p) needs).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfode._odeint import odeint

_PACKAGE = "tfode"


def standard_normal_log_prob(z, scale: float = 1.0):
    """log N(z; 0, scale^2 I), summed over the last axis."""
    d = tf.cast(tf.shape(z)[-1], z.dtype)
    return (-0.5 * tf.reduce_sum((z / scale) ** 2, -1)
            - d * (0.5 * math.log(2 * math.pi) + math.log(scale)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HyperPlanarDynamics(keras.layers.Layer):
    """The gated, time-dependent planar CNF dynamics of the paper (Section 4):

    dz/dt = sum_n sigma_n(t) u_n(t) h(w_n(t)^T z + b_n(t)),  h = tanh,

    with ``w, u, b`` and the gates ``sigma`` (a sigmoid per unit and dimension) given
    by a hypernetwork of t, 1 -> hidden -> hidden -> 3 M D + M (tanh), initialised as in
    the reference example. ``reduce="sum"`` is the paper's sum over units; ``"mean"``
    divides by M as the reference code does.
    """

    def __init__(self, dim: int = 2, width: int = 64, hidden: int = 32, reduce: str = "sum",
                 **kwargs):
        super().__init__(**kwargs)
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean'; got {reduce!r}.")
        self.dim, self.width, self.hidden, self.reduce = dim, width, hidden, reduce

        def dense(units, fan_in, **kw):
            # The reference example's (PyTorch's) initialisation: weights and biases
            # uniform in +-1/sqrt(fan_in). Keras' zero biases would make w, u and b
            # vanish at t = 0, and the flow start still.
            def init():
                return keras.initializers.RandomUniform(-fan_in ** -0.5, fan_in ** -0.5)

            return keras.layers.Dense(units, kernel_initializer=init(), bias_initializer=init(),
                                      dtype=self.dtype_policy, **kw)

        self.h1 = dense(hidden, 1, activation="tanh")
        self.h2 = dense(hidden, hidden, activation="tanh")
        self.h3 = dense(3 * width * dim + width, hidden)

    def build(self, input_shape=None):
        self.h1.build((1, 1))
        self.h2.build((1, self.hidden))
        self.h3.build((1, self.hidden))
        self.built = True

    def params(self, t):
        """``w (M, D), b (M,), u (M, D)`` (gated) at time ``t``."""
        m, d = self.width, self.dim
        p = self.h3(self.h2(self.h1(tf.reshape(tf.cast(t, self.compute_dtype), (1, 1)))))[0]
        w = tf.reshape(p[:m * d], (m, d))
        u = tf.reshape(p[m * d:2 * m * d], (m, d))
        gate = tf.sigmoid(tf.reshape(p[2 * m * d:3 * m * d], (m, d)))
        b = p[3 * m * d:]
        return w, b, u * gate

    def call(self, t, z):
        w, b, u = self.params(t)
        out = tf.matmul(tf.tanh(tf.matmul(z, w, transpose_b=True) + b), u)
        return out / self.width if self.reduce == "mean" else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "width": self.width,
                "hidden": self.hidden, "reduce": self.reduce}


class CNF(keras.layers.Layer):
    """A continuous normalizing flow around a dynamics layer ``f(t, z)`` on ``[B, D]``.

    Args:
        dynamics: Keras layer (or callable) ``f(t, z)``.
        t0, t1: Base time and data time.
        trace: ``"exact"`` or ``"hutchinson"``.
        noise: Hutchinson probes, ``"rademacher"`` or ``"gaussian"``.
        base_scale: Standard deviation of the Gaussian base density.
        method, rtol, atol, **odeint_kwargs: As for :func:`tfode.odeint` (the paper's
            density experiments used tolerance 1e-5).
    """

    def __init__(self, dynamics, t0: float = 0.0, t1: float = 1.0, trace: str = "exact",
                 noise: str = "rademacher", base_scale: float = 1.0, method: str = "dopri5",
                 rtol: float = 1e-5, atol: float = 1e-5, **odeint_kwargs):
        super().__init__(dtype=odeint_kwargs.pop("dtype", None))
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"trace must be 'exact' or 'hutchinson'; got {trace!r}.")
        if noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian'; got {noise!r}.")
        self.dynamics, self.t0, self.t1 = dynamics, float(t0), float(t1)
        self.trace, self.noise, self.base_scale = trace, noise, float(base_scale)
        # XLA-compiled CNF dynamics (a batch Jacobian inside a gradient) ran about 100x
        # slower in the backward pass here than without XLA: off unless asked for.
        odeint_kwargs.setdefault("jit_compile", False)
        self.solver = dict(method=method, rtol=rtol, atol=atol, **odeint_kwargs)
        self._aug = self._exact if trace == "exact" else self._hutchinson

    def build(self, input_shape):
        if isinstance(self.dynamics, keras.layers.Layer) and not self.dynamics.built:
            self.dynamics.build(input_shape)
        self.built = True

    def _exact(self, t, state):
        z = state[:, :-1]
        with tf.GradientTape() as tape:
            tape.watch(z)
            dz = self.dynamics(t, z)
        trace = tf.linalg.trace(tape.batch_jacobian(dz, z))
        return tf.concat([dz, -trace[:, None]], -1)

    def _hutchinson(self, t, state):
        d = (state.shape[-1] - 1) // 2
        z, e = state[:, :d], state[:, d + 1:]
        with tf.GradientTape() as tape:
            tape.watch(z)
            dz = self.dynamics(t, z)
        e_jac = tape.gradient(dz, z, output_gradients=e)
        trace = tf.reduce_sum(e_jac * e, -1)
        return tf.concat([dz, -trace[:, None], tf.zeros_like(e)], -1)

    def _probe(self, z):
        if self.noise == "gaussian":
            return tf.random.normal(tf.shape(z), dtype=z.dtype)
        return tf.sign(tf.random.uniform(tf.shape(z), -1.0, 1.0, dtype=z.dtype))

    def integrate(self, z, t_from: float, t_to: float, times=None, stats=None):
        """Integrates ``[z, 0]`` from ``t_from`` to ``t_to``; returns ``(z_end, l_end)``,
        or the states and log-density changes at every time of ``times``."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        zero = tf.zeros_like(z[:, :1])
        parts = [z, zero] + ([self._probe(z)] if self.trace == "hutchinson" else [])
        t = tf.constant([t_from, t_to] if times is None else times, tf.float64)
        ys = odeint(self._aug, tf.concat(parts, -1), t, stats=stats, **self.solver)
        d = z.shape[-1]
        if times is None:
            return ys[-1, :, :d], ys[-1, :, d]
        return ys[:, :, :d], ys[:, :, d]

    def log_prob(self, x, stats=None):
        """log p(x) of data at ``t1``: integrate back to the base at ``t0``."""
        z, l_end = self.integrate(x, self.t1, self.t0, stats=stats)
        return standard_normal_log_prob(z, self.base_scale) - l_end

    def sample(self, n: int | None = None, z=None, stats=None):
        """Samples and their log-density: ``z ~ base`` at ``t0`` flowed to ``t1``."""
        if z is None:
            z = tf.random.normal((n, self._dim()), stddev=self.base_scale,
                                 dtype=self.compute_dtype)
        x, l_end = self.integrate(z, self.t0, self.t1, stats=stats)
        return x, standard_normal_log_prob(z, self.base_scale) + l_end

    def _dim(self):
        return int(getattr(self.dynamics, "dim", 2))

    def call(self, x):
        return self.log_prob(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlanarFlow(keras.layers.Layer):
    """K planar layers f(z) = z + u h(w^T z + b) (Rezende and Mohamed 2015), h = tanh,
    with the invertibility constraint on u (w^T u >= -1) and the log-determinant by
    the matrix determinant lemma: log |1 + u^T psi|, psi = h'(w^T z + b) w."""

    def __init__(self, layers: int = 8, dim: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.k, self.dim = layers, dim

    def build(self, input_shape=None):
        # w of unit scale: the constraint divides by |w|^2, and a small w makes the
        # corrected u (and a deep flow) explode at initialisation.
        self.u = self.add_weight(shape=(self.k, self.dim), name="u",
                                 initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.w = self.add_weight(shape=(self.k, self.dim), name="w",
                                 initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.b = self.add_weight(shape=(self.k,), initializer="zeros", name="b")
        self.built = True

    def constrained_u(self):
        wu = tf.reduce_sum(self.w * self.u, -1, keepdims=True)
        m = -1.0 + tf.math.softplus(wu)
        return self.u + (m - wu) * self.w / (tf.reduce_sum(self.w ** 2, -1, keepdims=True) + 1e-12)

    def call(self, z):
        """Returns ``(x, log|det dx/dz|)``."""
        u = self.constrained_u()
        logdet = tf.zeros_like(z[:, 0])
        for i in range(self.k):
            a = tf.linalg.matvec(z, self.w[i]) + self.b[i]
            h = tf.tanh(a)
            psi = (1.0 - h ** 2)[:, None] * self.w[i]
            logdet += tf.math.log(tf.abs(1.0 + tf.linalg.matvec(psi, u[i])) + 1e-12)
            z = z + h[:, None] * u[i]
        return z, logdet

    def sample(self, n: int, z=None):
        """Samples of the flow and their log-density (standard normal base)."""
        if z is None:
            z = tf.random.normal((n, self.dim), dtype=self.compute_dtype)
        x, logdet = self(z)
        return x, standard_normal_log_prob(z) - logdet

    def inverse(self, x, bisection_steps: int = 40, newton_steps: int = 3):
        """``z`` with ``self(z)[0] == x``, layer by layer: each planar layer is inverted
        along ``w`` by solving ``a + (w.u) tanh(a + b) = w.x`` for ``a = w.z``
        (monotonic in ``a`` under the constraint ``w.u >= -1``; the root lies within
        ``|w.u|`` of ``w.x``): bisection, then Newton steps, which make the result
        differentiable (the implicit-function gradient at the root). Then
        ``z = x - u tanh(a + b)``. Returns ``(z, log|det dx/dz|)``."""
        u = self.constrained_u()
        logdet = tf.zeros_like(x[:, 0])
        for i in reversed(range(self.k)):
            wu = tf.reduce_sum(self.w[i] * u[i])
            target = tf.linalg.matvec(x, self.w[i])
            lo, hi = tf.stop_gradient(target - tf.abs(wu)), tf.stop_gradient(target + tf.abs(wu))
            for _ in range(bisection_steps):
                mid = 0.5 * (lo + hi)
                above = mid + wu * tf.tanh(mid + self.b[i]) > target
                lo, hi = tf.where(above, lo, mid), tf.where(above, mid, hi)
            a = tf.stop_gradient(0.5 * (lo + hi))
            for _ in range(newton_steps):
                h = tf.tanh(a + self.b[i])
                a = a - (a + wu * h - target) / (1.0 + wu * (1.0 - h ** 2))
            h = tf.tanh(a + self.b[i])
            x = x - h[:, None] * u[i]
            psi_u = (1.0 - h ** 2) * wu
            logdet += tf.math.log(tf.abs(1.0 + psi_u) + 1e-12)
        return x, logdet

    def log_prob(self, x):
        """log-density of data under the flow, through :meth:`inverse`."""
        z, logdet = self.inverse(x)
        return standard_normal_log_prob(z) - logdet

    def get_config(self):
        return {**super().get_config(), "layers": self.k, "dim": self.dim}


# ---------------------------------------------------------------------------------------
# Rezende and Mohamed's 2-D test energies (the density-matching targets, p ~ exp(-U)).


def _w1(z):
    return tf.sin(2.0 * np.pi * z[:, 0] / 4.0)


def _w2(z):
    return 3.0 * tf.exp(-0.5 * ((z[:, 0] - 1.0) / 0.6) ** 2)


#: Half-width of the window the test energies are drawn in, ``|z| <= 4``.
ENERGY_WINDOW = 4.0


def energy(name: str, z):
    """U(z) of the test energies ``U1``, ``U2``, ``U3``, ``U4``, and the confined
    ``U2c``, ``U3c``: U2 and U3 do not grow along ``z1``, so ``exp(-U)`` has infinite
    mass; the confined versions add ``0.5 * (max(|z1| - 4, 0) / 0.2) ** 2``, equal to U
    inside the window the energies are drawn in and normalisable."""
    z1, z2 = z[:, 0], z[:, 1]
    if name in ("U2c", "U3c"):
        outside = tf.nn.relu(tf.abs(z1) - ENERGY_WINDOW)
        return energy(name[:2], z) + 0.5 * (outside / 0.2) ** 2
    if name == "U1":
        r = tf.norm(z, axis=-1)
        return (0.5 * ((r - 2.0) / 0.4) ** 2
                - tf.math.log(tf.exp(-0.5 * ((z1 - 2.0) / 0.6) ** 2)
                              + tf.exp(-0.5 * ((z1 + 2.0) / 0.6) ** 2) + 1e-12))
    if name == "U2":
        return 0.5 * ((z2 - _w1(z)) / 0.4) ** 2
    if name == "U3":
        return -tf.math.log(tf.exp(-0.5 * ((z2 - _w1(z)) / 0.35) ** 2)
                            + tf.exp(-0.5 * ((z2 - _w1(z) + _w2(z)) / 0.35) ** 2) + 1e-12)
    if name == "U4":
        w3 = 3.0 * tf.sigmoid((z1 - 1.0) / 0.3)
        return -tf.math.log(tf.exp(-0.5 * ((z2 - _w1(z)) / 0.4) ** 2)
                            + tf.exp(-0.5 * ((z2 - _w1(z) + w3) / 0.35) ** 2) + 1e-12)
    raise ValueError(f"Unknown energy {name!r}; choose U1, U2, U3, U4, U2c or U3c.")
