"""Latent ODEs for irregularly sampled time series (Section 5 of the paper).

A :class:`LatentODE` is a variational autoencoder over time series:

* a recognition RNN (:class:`RecognitionRNN`) reads the observations and the time
  gaps between them backward in time and returns ``q(z0 | x) = N(mean, exp(logvar))``;
* a latent state ``z0 ~ q`` is integrated with :func:`tfode.odeint` through a small
  autonomous dynamics network (one hidden layer), once for the whole batch, at the
  union of all the batch's observation times;
* a decoder maps ``z(t)`` to the mean of a Gaussian observation model with a fixed
  standard deviation. :meth:`LatentODE.elbo` is the evidence lower bound with a
  ``N(0, I)`` prior (one reparameterised sample, analytic KL).

With ``intensity_units > 0`` the model also has an intensity network
``lambda(z) > 0``; :meth:`LatentODE.poisson_elbo` is the ELBO of the inhomogeneous
Poisson process likelihood

    log p(t_1 .. t_N) = sum_i log lambda(z(t_i)) - integral_{t0}^{T} lambda(z(t)) dt,

where the integral is one extra state integrated in the same solve as ``z``.

Sequences in a batch may have different observation times and different lengths:
pass them padded, ``[batch, n]``, with a boolean ``mask``. All models here are
float64 by default: the paper's tolerance (1.5e-8) is below what float32 dynamics
can resolve.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfode._odeint import odeint
from tfode._stats import SolveStats

_PACKAGE = "tfode"
#: SciPy odeint's default tolerance, used by the paper's sequence experiments.
PAPER_TOLERANCE = 1.49012e-8
_LOG_2PI = math.log(2.0 * math.pi)


def _as_dtype(value, dtype):
    """``value`` as a tensor of ``dtype``; Python numbers converted directly (a cast
    would round them to float32 first: 0.3 would become 0.30000001192...)."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.cast(value, dtype)
    return tf.convert_to_tensor(value, dtype)


def gaussian_log_prob(x, mean, std):
    """Elementwise log N(x; mean, std^2); ``std`` a scalar or a tensor."""
    std = _as_dtype(std, mean.dtype)
    return -0.5 * (_LOG_2PI + 2.0 * tf.math.log(std) + tf.square((x - mean) / std))


def normal_kl(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over the last axis."""
    return 0.5 * tf.reduce_sum(tf.exp(logvar) + tf.square(mean) - 1.0 - logvar, -1)


def poisson_log_likelihood(log_intensity_at_events, integrated_intensity, mask=None):
    """The inhomogeneous Poisson process log-likelihood of each sequence.

    Args:
        log_intensity_at_events: ``log lambda(t_i)``, ``[batch, n]``.
        integrated_intensity: ``integral lambda(t) dt`` over the observation window,
            ``[batch]``.
        mask: Optional boolean ``[batch, n]``: which events are real (not padding).

    Returns:
        ``sum_i log lambda(t_i) - integral lambda dt``, shape ``[batch]``.
    """
    terms = log_intensity_at_events
    if mask is not None:
        terms = tf.where(mask, terms, tf.zeros_like(terms))
    return tf.reduce_sum(terms, -1) - integrated_intensity


def _time_gaps(t, t0):
    """``t_i - t_{i-1}`` with ``t_{-1} = t0``, for ``t`` of shape ``[batch, n]``."""
    previous = tf.concat([tf.fill(tf.shape(t[:, :1]), _as_dtype(t0, t.dtype)), t[:, :-1]], 1)
    return t - previous


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RecognitionRNN(keras.layers.Layer):
    """A tanh RNN run backward in time over ``[x_i, t_i - t_{i-1}]``; its final state
    gives the mean and log-variance of ``q(z0)``.

    Args:
        latent_dim: Size of ``z0``.
        units: RNN hidden units (25 in the paper).
        t0: The time of ``z0``; the first gap is ``t_0 - t0``.
    """

    def __init__(self, latent_dim: int = 4, units: int = 25, t0: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.units, self.t0 = latent_dim, units, float(t0)
        self.rnn = keras.layers.SimpleRNN(units, dtype=self.dtype_policy)
        self.head = keras.layers.Dense(2 * latent_dim, dtype=self.dtype_policy)

    def build(self, input_shape):
        batch, steps, dim = input_shape
        self.rnn.build((batch, steps, dim + 1))
        self.head.build((batch, self.units))
        self.built = True

    def call(self, x, t, observed=None):
        """``x``: ``[batch, n, obs_dim]`` (obs_dim may be 0); ``t``: ``[batch, n]``;
        ``observed``: optional ``[batch, n]`` bool marking real (not padding) entries.
        Returns ``(mean, logvar)``."""
        x = tf.convert_to_tensor(x, self.compute_dtype)
        t = tf.cast(t, self.compute_dtype)
        inputs = tf.concat([x, _time_gaps(t, self.t0)[..., None]], -1)
        reverse_mask = None if observed is None else tf.reverse(observed, [1])
        h = self.rnn(tf.reverse(inputs, [1]), mask=reverse_mask)
        mean, logvar = tf.split(self.head(h), 2, axis=-1)
        return mean, logvar

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "units": self.units,
                "t0": self.t0}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MLP(keras.layers.Layer):
    """``layers`` times ``Dense(hidden, activation)``, then ``Dense(out)``, on inputs of
    any rank."""

    def __init__(self, hidden: int, out: int, activation: str = "tanh", layers: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        if int(layers) != layers or layers < 1:
            raise ValueError(f"layers must be a positive integer (hidden layers); got "
                             f"{layers!r}.")
        self.hidden, self.out, self.activation = hidden, out, activation
        self.depth = int(layers)
        self.inner = keras.layers.Dense(hidden, activation=activation, dtype=self.dtype_policy)
        self.outer = keras.layers.Dense(out, dtype=self.dtype_policy)
        # Created after ``outer`` so that a one-layer MLP keeps its weights' order.
        self.deeper = [keras.layers.Dense(hidden, activation=activation,
                                          dtype=self.dtype_policy)
                       for _ in range(self.depth - 1)]

    def build(self, input_shape):
        self.inner.build(input_shape)
        for layer in self.deeper:
            layer.build((*input_shape[:-1], self.hidden))
        self.outer.build((*input_shape[:-1], self.hidden))
        self.built = True

    def call(self, x):
        h = self.inner(x)
        for layer in self.deeper:
            h = layer(h)
        return self.outer(h)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "out": self.out,
                "activation": self.activation, "layers": self.depth}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LatentODE(keras.Model):
    """The paper's latent ODE: RNN encoder, ODE in latent space, MLP decoder.

    Args:
        obs_dim: Observation size (2 for the spirals; 0 for event-only data, whose
            encoder then reads each event's time beside its gap).
        latent_dim: Latent size (4 in the paper).
        rnn_units: Encoder RNN units (25).
        dynamics_units: Hidden units of the latent dynamics (20).
        dynamics_layers: Hidden layers of the latent dynamics: 1 (default) as the paper
            describes it, 2 as in the authors' example code.
        decoder_units: Hidden units of the decoder (20, one hidden layer).
        intensity_units: Hidden units of the Poisson intensity network ``lambda(z)``;
            0 (default) for no intensity.
        obs_std: Standard deviation of the Gaussian observation model.
        t0: Time of ``z0``; every observation time must be at or after it.
        method, rtol, atol: The solver (default: SciPy's ``odeint``, LSODA, at its
            default tolerance 1.49e-8, as in the paper's sequence experiments).
        odeint_kwargs: Further arguments of :func:`tfode.odeint` (``adjoint``,
            ``options``, ...).
        dtype: Layer dtype (default float64).

    Attributes:
        stats: A :class:`tfode.SolveStats` with the NFE of the latest solve.
    """

    def __init__(self, obs_dim: int = 2, latent_dim: int = 4, rnn_units: int = 25,
                 dynamics_units: int = 20, decoder_units: int = 20, intensity_units: int = 0,
                 obs_std: float = 0.3, t0: float = 0.0, method: str = "odeint",
                 rtol: float = PAPER_TOLERANCE, atol: float = PAPER_TOLERANCE,
                 odeint_kwargs: dict | None = None, dtype="float64", dynamics_layers: int = 1,
                 **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.obs_dim, self.latent_dim = obs_dim, latent_dim
        self.rnn_units, self.dynamics_units = rnn_units, dynamics_units
        self.dynamics_layers = int(dynamics_layers)
        self.decoder_units, self.intensity_units = decoder_units, intensity_units
        self.obs_std, self.t0 = float(obs_std), float(t0)
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self.odeint_kwargs = dict(odeint_kwargs or {})
        policy = self.dtype_policy
        self.encoder = RecognitionRNN(latent_dim, rnn_units, t0, dtype=policy, name="encoder")
        self.dynamics = MLP(dynamics_units, latent_dim, "elu", layers=dynamics_layers,
                            dtype=policy, name="dynamics")
        self.decoder = (MLP(decoder_units, obs_dim, "relu", dtype=policy, name="decoder")
                        if obs_dim else None)
        self.intensity = (MLP(intensity_units, 1, "tanh", dtype=policy, name="intensity")
                          if intensity_units else None)
        self.stats = SolveStats()
        self.encoder.build((None, None, obs_dim or 1))
        self.dynamics.build((None, latent_dim))
        if self.decoder is not None:
            self.decoder.build((None, latent_dim))
        if self.intensity is not None:
            self.intensity.build((None, latent_dim))
        self.built = True

    # -- the pieces -------------------------------------------------------------------
    def encode(self, x, t, mask=None):
        """``q(z0 | x)``: ``(mean, logvar)``, each ``[batch, latent_dim]``. Event-only
        models (``obs_dim=0``) take ``x=None``: the encoder reads the event times."""
        if x is None:
            if self.obs_dim:
                raise ValueError(f"This LatentODE has obs_dim={self.obs_dim}: pass the "
                                 "observations x to encode them.")
            x = tf.cast(t, self.compute_dtype)[..., None]
        return self.encoder(x, t, observed=mask)

    def log_intensity(self, z):
        """``log lambda(z)`` with ``lambda = softplus(mlp(z))``, for ``z`` of any
        leading shape ``[..., latent_dim]``."""
        return tf.math.log(tf.math.softplus(self.intensity(z))[..., 0])

    def _latent_dynamics(self, t, z):
        return self.dynamics(z)

    def _poisson_dynamics(self, t, state):
        z = state[:, :-1]
        rate = tf.math.softplus(self.intensity(z))
        return tf.concat([self.dynamics(z), rate], -1)

    def latent_trajectory(self, z0, times, with_intensity: bool = False):
        """Integrates ``z0`` from ``t0``; returns ``z`` at ``times`` (1-D, increasing,
        all ``>= t0``) as ``[len(times), batch, latent_dim]``. With
        ``with_intensity`` returns ``(z, integral of lambda from t0)``."""
        z0 = tf.convert_to_tensor(z0, self.compute_dtype)
        # The times are data: no gradient flows to them (the adjoint then skips the
        # evaluations of dL/dt). Integrate from t0; it is an output time already
        # when times[0] == t0.
        times = tf.stop_gradient(tf.cast(times, tf.float64))
        grid, _ = tf.unique(tf.concat([[self.t0], times], 0))
        grid = tf.stop_gradient(grid)
        skip = tf.size(grid) - tf.size(times)
        solver = dict(method=self.method, rtol=self.rtol, atol=self.atol, stats=self.stats,
                      **self.odeint_kwargs)
        if not with_intensity:
            return odeint(self._latent_dynamics, z0, grid, **solver)[skip:]
        if self.intensity is None:
            raise ValueError("This LatentODE has no intensity network; build it with "
                             "intensity_units > 0 to use the Poisson likelihood.")
        state0 = tf.concat([z0, tf.zeros_like(z0[:, :1])], -1)
        ys = odeint(self._poisson_dynamics, state0, grid, **solver)[skip:]
        return ys[..., :-1], ys[..., -1]

    def sample_z0(self, mean, logvar, seed=None):
        """One reparameterised sample of ``q(z0)``; ``seed``, a pair of integers,
        makes it deterministic (``tf.random.stateless_normal``)."""
        if seed is None:
            eps = tf.random.normal(tf.shape(mean), dtype=mean.dtype)
        else:
            eps = tf.random.stateless_normal(tf.shape(mean), seed, dtype=mean.dtype)
        return mean + tf.exp(0.5 * logvar) * eps

    def _union(self, t, mask, extra=None):
        """The sorted distinct times of a padded batch (padding counted as ``t0``)
        and, for every entry of ``t``, its index in them."""
        t = tf.cast(t, tf.float64)
        if mask is not None:
            t = tf.where(mask, t, tf.fill(tf.shape(t), tf.constant(self.t0, tf.float64)))
        flat = tf.reshape(t, [-1])
        if extra is not None:
            flat = tf.concat([flat, tf.reshape(tf.cast(extra, tf.float64), [-1])], 0)
        times, _ = tf.unique(tf.sort(flat))
        index = tf.searchsorted(times[None], tf.reshape(t, [1, -1]))
        return times, tf.reshape(index, tf.shape(t))

    @staticmethod
    def _gather(traj, index):
        """``traj[index[b, i], b]`` for ``traj`` ``[T, batch, ...]``: ``[batch, n, ...]``."""
        batch = tf.broadcast_to(tf.range(tf.shape(index)[0])[:, None], tf.shape(index))
        return tf.gather_nd(traj, tf.stack([index, batch], -1))

    # -- objectives -------------------------------------------------------------------
    def elbo(self, x, t, mask=None, seed=None):
        """The ELBO of each sequence, ``[batch]``: ``log p(x | z)`` of one sample of
        ``q(z0 | x)`` minus ``KL(q || N(0, I))``.

        Args:
            x: Observations ``[batch, n, obs_dim]``.
            t: Their times ``[batch, n]``, each row increasing, ``>= t0``.
            mask: Optional bool ``[batch, n]`` marking real observations.
            seed: Optional stateless seed (two integers) of the reparameterisation noise.
        """
        x = tf.convert_to_tensor(x, self.compute_dtype)
        mean, logvar = self.encode(x, t, mask)
        z0 = self.sample_z0(mean, logvar, seed)
        return self.observation_log_likelihood(z0, x, t, mask) - normal_kl(mean, logvar)

    def observation_log_likelihood(self, z0, x, t, mask=None):
        """``log p(x | z0)`` of each sequence, ``[batch]``: the Gaussian observation
        model at ``z(t)``, one solve for the whole batch at the union of its times."""
        x = tf.convert_to_tensor(x, self.compute_dtype)
        times, index = self._union(t, mask)
        z = self._gather(self.latent_trajectory(z0, times), index)
        logp = tf.reduce_sum(gaussian_log_prob(x, self.decoder(z), self.obs_std), -1)
        if mask is not None:
            logp = tf.where(mask, logp, tf.zeros_like(logp))
        return tf.reduce_sum(logp, -1)

    def poisson_elbo(self, t, t_end, mask=None, x=None, seed=None):
        """The ELBO of event sequences under the Poisson process likelihood, ``[batch]``.

        Args:
            t: Event times ``[batch, n]`` (padded; each row increasing in its real part).
            t_end: End of the observation window (scalar, ``>=`` every event time).
            mask: Optional bool ``[batch, n]`` marking real events.
            x: Observations at the events for the encoder (models with
                ``obs_dim > 0``); None for event-only models.
            seed: Optional stateless seed (two integers) of the reparameterisation noise.
        """
        mean, logvar = self.encode(x, t, mask)
        z0 = self.sample_z0(mean, logvar, seed)
        return self.event_log_likelihood(z0, t, t_end, mask) - normal_kl(mean, logvar)

    def event_log_likelihood(self, z0, t, t_end, mask=None):
        """The Poisson process log-likelihood of event times ``t`` (``[batch, n]``,
        padded, with ``mask``) on ``[t0, t_end]`` given ``z0``: ``[batch]``. One solve
        gives ``z`` at every event time and the integral of the intensity."""
        t_end = tf.cast(t_end, tf.float64)
        times, index = self._union(t, mask, extra=t_end)
        z, integral = self.latent_trajectory(z0, times, with_intensity=True)
        log_rate = self.log_intensity(self._gather(z, index))
        return poisson_log_likelihood(log_rate, integral[-1], mask)

    def predict_path(self, x, t, times, mask=None, z0=None):
        """Decoded trajectories at shared ``times`` (1-D, increasing), from the
        posterior mean of ``z0`` (or a given ``z0``): ``([batch, T, obs_dim], z)``
        with ``z`` ``[T, batch, latent_dim]``."""
        if z0 is None:
            z0, _ = self.encode(x, t, mask)
        z = self.latent_trajectory(z0, times)
        return tf.transpose(self.decoder(z), [1, 0, 2]), z

    def call(self, inputs):
        """``inputs = (x, t)`` or ``(x, t, mask)``: the negative mean ELBO."""
        return -tf.reduce_mean(self.elbo(*inputs))

    def get_config(self):
        return {**super().get_config(), "obs_dim": self.obs_dim, "latent_dim": self.latent_dim,
                "rnn_units": self.rnn_units, "dynamics_units": self.dynamics_units,
                "dynamics_layers": self.dynamics_layers,
                "decoder_units": self.decoder_units, "intensity_units": self.intensity_units,
                "obs_std": self.obs_std, "t0": self.t0, "method": self.method,
                "rtol": self.rtol, "atol": self.atol, "odeint_kwargs": self.odeint_kwargs}
