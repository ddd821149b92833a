"""Regularisers that cut function evaluations (Finlay et al. 2020; Ghosh et al. 2020).

:class:`RegularizedDynamics` augments a batch of states with per-sample integrals
solved in the same ``odeint`` call: the kinetic energy ``integral ||f||^2 dt`` and the
Jacobian Frobenius norm ``integral ||e^T df/dz||^2 dt`` (Hutchinson: its expectation
over a Rademacher probe ``e`` is ``||df/dz||_F^2``). The probe rides in the state
with zero derivative, so it is drawn once per solve and the compiled callbacks stay
fixed. STEER (a random end time) is done by :class:`tfode.layers.ODEBlock`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class RegularizedDynamics:
    """``[z, E, J, e]`` per sample (``E``/``J``/``e`` only when asked for) with
    derivatives ``[f, ||f||^2, ||e^T df/dz||^2, 0]``.

    Args:
        func: The dynamics ``func(t, z)`` on states of shape ``[batch, *sample_shape]``.
        sample_shape: The shape of one sample.
        kinetic: Integrate the kinetic energy.
        jacobian: Integrate the Hutchinson estimate of the Jacobian Frobenius norm.
    """

    def __init__(self, func, sample_shape, kinetic: bool, jacobian: bool):
        self.func, self.sample_shape = func, tuple(int(s) for s in sample_shape)
        self.d = int(np.prod(self.sample_shape))
        self.kinetic, self.jacobian = bool(kinetic), bool(jacobian)
        self.extra = int(self.kinetic) + int(self.jacobian)

    def initial_state(self, z):
        """The augmented initial state ``[batch, d + extra (+ d)]`` for ``z``."""
        flat = tf.reshape(z, [-1, self.d])
        parts = [flat] + [tf.zeros_like(flat[:, :1])] * self.extra
        if self.jacobian:
            parts.append(tf.sign(tf.random.uniform(tf.shape(flat), -1.0, 1.0, dtype=flat.dtype)))
        return tf.concat(parts, 1)

    def split(self, states):
        """``(z, {"kinetic": E, "jacobian": J})`` from augmented states ``[..., batch, D]``."""
        lead = tf.shape(states)[:-1]
        z = tf.reshape(states[..., :self.d], tf.concat([lead, self.sample_shape], 0))
        values, k = {}, self.d
        for name, on in (("kinetic", self.kinetic), ("jacobian", self.jacobian)):
            if on:
                values[name] = states[..., k]
                k += 1
        return z, values

    def __call__(self, t, s):
        batch_shape = tf.concat([tf.shape(s)[:1], self.sample_shape], 0)
        z = tf.reshape(s[:, :self.d], batch_shape)
        if self.jacobian:
            probe = tf.reshape(s[:, self.d + self.extra:], batch_shape)
            with tf.GradientTape() as tape:
                tape.watch(z)
                f = tf.convert_to_tensor(self.func(t, z))
            e_jac = tape.gradient(f, z, output_gradients=probe)
        else:
            f = tf.convert_to_tensor(self.func(t, z))
        flat = tf.reshape(f, [-1, self.d])
        parts = [flat]
        if self.kinetic:
            parts.append(tf.reduce_sum(tf.square(flat), 1, keepdims=True))
        if self.jacobian:
            parts.append(tf.reduce_sum(tf.square(tf.reshape(e_jac, [-1, self.d])), 1,
                                       keepdims=True))
            parts.append(tf.zeros_like(flat))
        return tf.concat(parts, 1)
