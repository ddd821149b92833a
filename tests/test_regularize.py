"""Regularisers of ODEBlock (kinetic energy, Jacobian Frobenius norm, STEER) against
direct quadrature and closed forms."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, linalg

from tfode.layers import ODEBlock

TOL = 1e-10


class Linear(keras.layers.Layer):
    """f(t, z) = z A (row vectors) with a fixed matrix A."""

    def __init__(self, a, **kwargs):
        super().__init__(dtype="float64", **kwargs)
        self.a = tf.constant(a, tf.float64)

    def call(self, t, z):
        return tf.matmul(z, self.a)


A = np.array([[-0.3, 1.2], [-0.8, -0.1]])


def _block(**kwargs):
    return ODEBlock(Linear(A), t=(0.0, 1.5), method="dopri5", rtol=TOL, atol=TOL,
                    dtype="float64", **kwargs)


def test_kinetic_energy_equals_direct_quadrature():
    z0 = np.array([[1.0, -0.5], [0.2, 0.7], [-1.1, 0.4]])
    block = _block(kinetic=0.25)
    out = block(tf.constant(z0), training=True)
    # z(t) = z0 expm(A t); E = integral ||z(t) A||^2 dt over [0, 1.5], per sample.
    energies = [integrate.quad(lambda s, z=z: float(np.sum((z @ linalg.expm(A * s) @ A) ** 2)),
                               0.0, 1.5, epsabs=1e-13, epsrel=1e-12)[0] for z in z0]
    assert len(block.losses) == 1
    assert float(block.losses[0]) == pytest.approx(0.25 * np.mean(energies), rel=1e-7)
    np.testing.assert_allclose(out, z0 @ linalg.expm(A * 1.5), rtol=1e-8)
    # No regulariser outside training.
    block(tf.constant(z0), training=False)
    assert not block.losses


def test_jacobian_frobenius_estimate_is_exact_for_an_orthogonal_jacobian():
    # f(z) = z Q with Q = 2 x rotation: ||e^T df/dz||^2 = 4 ||e||^2 = 4 d for every
    # Rademacher probe, so the integral over [0, T] is 4 d T exactly.
    q = 2.0 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    block = ODEBlock(Linear(q), t=(0.0, 0.7), method="dopri5", rtol=TOL, atol=TOL,
                     dtype="float64", jacobian_norm=0.5, kinetic=0.1)
    z0 = np.random.default_rng(0).normal(size=(4, 2))
    block(tf.constant(z0), training=True)
    energies = [integrate.quad(lambda s, z=z: float(np.sum((z @ linalg.expm(q * s) @ q) ** 2)),
                               0.0, 0.7, epsabs=1e-13, epsrel=1e-12)[0] for z in z0]
    want = 0.5 * 4 * 2 * 0.7 + 0.1 * np.mean(energies)
    assert float(block.losses[0]) == pytest.approx(want, rel=1e-7)


def test_regularised_training_lowers_the_kinetic_energy_and_gradients_flow():
    keras.utils.set_random_seed(0)
    from tfode.layers import ConcatMLP

    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    y = (x[:, 0] * x[:, 1] > 0).astype("float32")
    block = ODEBlock(ConcatMLP((16,)), t=(0.0, 1.0), kinetic=1.0, jacobian_norm=0.1)
    model = keras.Sequential([keras.Input((2,)), block, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    model(x[:8], training=True)
    before = float(block.losses[0])
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    model(x[:8], training=True)
    assert np.isfinite(before) and float(block.losses[0]) < before


def test_steer_draws_the_end_time_in_training_only():
    block = _block(steer=0.5)
    z0 = tf.constant([[1.0, 0.5]], tf.float64)
    fixed = z0.numpy() @ linalg.expm(A * 1.5)
    np.testing.assert_allclose(block(z0, training=False), fixed, rtol=1e-8)
    outs = [block(z0, training=True).numpy() for _ in range(4)]
    assert len({round(float(o[0, 0]), 6) for o in outs}) == 4
    for o in outs:  # every training output lies on the trajectory for t in [1, 2]
        ts = np.linspace(1.0, 2.0, 2001)
        dist = min(np.abs(z0.numpy() @ linalg.expm(A * s) - o).max() for s in ts)
        assert dist < 1e-3
    with pytest.raises(ValueError, match="steer needs t = \\(t0, t1\\) with steer"):
        ODEBlock(Linear(A), t=(0.0, 1.0), steer=1.5)
