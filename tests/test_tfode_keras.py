"""tfode.odeint inside Keras 3 ``model.fit`` (graph mode, unknown batch size)."""

import keras
import numpy as np
import tensorflow as tf

import tfode


class _ODE(keras.layers.Layer):
    """A minimal layer around ``tfode.odeint`` (the full layers are tfode.layers)."""

    supports_jit = False

    def __init__(self, stats=None, **kw):
        super().__init__(**kw)
        self.stats = stats

    def build(self, input_shape):
        self.dense = keras.layers.Dense(input_shape[-1], activation="tanh", dtype=self.dtype)
        self.dense.build(input_shape)

    def call(self, x):
        t = tf.constant([0.0, 1.0], tf.float64)
        return tfode.odeint(lambda s, y: self.dense(y), x, t, method="adams", rtol=1e-6,
                            atol=1e-6, stats=self.stats)[-1]


def test_model_fit_reduces_the_loss_and_records_statistics():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    y = (x[:, :1] * x[:, 1:] > 0).astype("float64")
    stats = tfode.SolveStats()
    model = keras.Sequential([keras.Input((2,), dtype="float64"),
                              keras.layers.Dense(4, dtype="float64"),
                              _ODE(stats=stats, dtype="float64"),
                              keras.layers.Dense(1, activation="sigmoid", dtype="float64")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy",
                  jit_compile=False)
    before = model.evaluate(x, y, verbose=0)
    ode_weights = [w.numpy().copy() for w in model.layers[1].trainable_variables]
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < before
    assert len(history.history["loss"]) == 3
    # The ODE layer's own weights were trained through the adjoint.
    changed = [not np.allclose(a, w.numpy()) for a, w in
               zip(ode_weights, model.layers[1].trainable_variables)]
    assert all(changed)
    assert int(stats.nfe_forward.numpy()) > 0 and int(stats.nfe_backward.numpy()) > 0
    preds = model.predict(x[:5], verbose=0)
    assert preds.shape == (5, 1) and np.all(np.isfinite(preds))
