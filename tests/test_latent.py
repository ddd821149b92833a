"""Latent ODE (Section 5): the spiral and event generators, the likelihoods against
independent NumPy/SciPy computations, training, save/load and the experiment script."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, stats

from experiments.latent_data import poisson_events, rmse, spirals, subsample
from tfode.latent import LatentODE, normal_kl, poisson_log_likelihood

TOL = 1e-10


# -- data ------------------------------------------------------------------------------
def test_spirals_shapes_split_noise_and_determinism():
    d = spirals(n_spirals=60, n_train=48, noise_std=0.2, seed=3)
    assert d.t.shape == (200,) and d.clean.shape == d.noisy.shape == (60, 200, 2)
    assert d.n_obs == 100 and d.n_train == 48 and d.clockwise.dtype == bool
    np.testing.assert_allclose(np.diff(d.t), 6 * np.pi / 999)
    assert d.t[0] == 0.0
    assert 0 < d.clockwise.sum() < 60  # both directions
    assert np.std(d.noisy - d.clean) == pytest.approx(0.2, rel=0.05)
    again = spirals(n_spirals=60, n_train=48, noise_std=0.2, seed=3)
    np.testing.assert_array_equal(d.noisy, again.noisy)
    other = spirals(n_spirals=60, n_train=48, noise_std=0.2, seed=4)
    assert not np.allclose(d.clean, other.clean)


def test_spirals_lie_on_the_archimedean_and_hyperbolic_curves():
    d = spirals(n_spirals=40, n_train=30, seed=0)
    b = 0.3
    for i in range(40):
        p = d.clean[i]
        if d.clockwise[i]:
            rel = p - [-5.0, 0.0]
            r = np.hypot(*rel.T)
            z = b * 50.0 / r  # r = 50 b / z
        else:
            rel = p - [5.0, 0.0]
            r = np.hypot(*rel.T)
            z = r / b  # r = b z
        np.testing.assert_allclose(rel, np.stack([r * np.cos(z), r * np.sin(z)], 1), atol=1e-9)
        # Consecutive points are one grid step apart in z: forward (counter-clockwise)
        # or backward (clockwise) in angle.
        step = np.diff(z)
        np.testing.assert_allclose(step, (-1 if d.clockwise[i] else 1) * 6 * np.pi / 999,
                                   rtol=1e-6)


def _unseen_by_brute_force(d):
    """Per future point of every spiral: no training window of the same direction
    holds its index on the curve."""
    out = np.zeros((len(d.starts), len(d.t) - d.n_obs), bool)
    for i, start in enumerate(d.starts):
        for k in range(out.shape[1]):
            index = start + d.n_obs + k
            out[i, k] = not any(
                s <= index < s + d.n_obs
                for s, cw in zip(d.starts[:d.n_train], d.clockwise[:d.n_train])
                if cw == d.clockwise[i])
    return out


def test_example_train_starts_cover_every_test_future_and_keep_the_test_spirals():
    shared = spirals(n_spirals=60, n_train=40, noise_std=0.2, seed=5)
    example = spirals(n_spirals=60, n_train=40, noise_std=0.2, seed=5, train_starts="example")
    test = slice(40, None)
    np.testing.assert_array_equal(example.noisy[test], shared.noisy[test])
    np.testing.assert_array_equal(example.starts[test], shared.starts[test])
    # The test spirals' starts leave room for their future; the training spirals' span
    # the reference example's range, the windows observed in full.
    assert 100 <= shared.starts.min() and shared.starts.max() <= 700
    assert 100 <= example.starts[:40].min() and example.starts[:40].max() <= 899
    assert example.starts[:40].max() > 700
    assert np.isfinite(example.noisy[:40, :100]).all()
    past_end = example.starts[:40, None] + np.arange(200) >= 1000
    assert past_end.any()
    np.testing.assert_array_equal(np.isnan(example.clean[:40, :, 0]), past_end)
    # Which future points lie on stretches no training window covers, against a brute
    # force count; few training spirals leave some uncovered in either mode.
    for d in (shared, example):
        np.testing.assert_array_equal(d.unseen_future(), _unseen_by_brute_force(d))
    # "cover" reaches as far as the test futures and no further: nothing past the end.
    cover = spirals(n_spirals=60, n_train=40, noise_std=0.2, seed=5, train_starts="cover")
    np.testing.assert_array_equal(cover.noisy[test], shared.noisy[test])
    assert cover.starts[:40].max() <= 800 and np.isfinite(cover.clean).all()
    full = spirals(noise_std=0.1, seed=0)
    assert full.unseen_future()[800:].mean() > 0.05
    assert not spirals(noise_std=0.1, seed=0, train_starts="example").unseen_future()[800:].any()
    # (random starts leave one test point, on the last index, to the cover's chance)
    assert spirals(noise_std=0.1, seed=0, train_starts="cover").unseen_future()[800:].sum() <= 1
    with pytest.raises(ValueError, match="train_starts must be"):
        spirals(train_starts="everywhere")


def test_seen_and_unseen_errors_split_the_future_points():
    from experiments import latent_ode

    truth = np.zeros((2, 3, 2))
    extrap = np.array([[[1.0, 1.0], [0.0, 0.0], [3.0, 4.0]], [[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])
    unseen = np.array([[False, False, True], [False, False, False]])
    got = latent_ode._seen_unseen(extrap, truth, unseen)
    assert got["rmse_unseen"] == pytest.approx(np.sqrt(25 / 2))
    assert got["rmse_seen"] == pytest.approx(np.sqrt((2 + 4 + 4) / 5 / 2))
    assert got["unseen_share"] == pytest.approx(1 / 6)
    # The covered points at the uncovered one's step (the third): only [0, 0] of spiral 2.
    assert got["rmse_seen_matched"] == pytest.approx(0.0)
    none = latent_ode._seen_unseen(extrap, truth, np.zeros((2, 3), bool))
    assert none["rmse_unseen"] is None and none["rmse_seen_matched"] is None
    # Step 2 uncovered in both spirals: no covered point there, so it drops out; at
    # step 3 the covered point is spiral 2's, of error 0.
    unseen = np.array([[False, True, True], [False, True, False]])
    got = latent_ode._seen_unseen(extrap, truth, unseen)
    assert got["rmse_seen_matched"] == pytest.approx(0.0)
    unseen = np.array([[False, True, False], [False, False, True]])
    got = latent_ode._seen_unseen(extrap, truth, unseen)
    # step 2: covered spiral 2 (err 4); step 3: covered spiral 1 (err 25); weights 1 : 1
    assert got["rmse_seen_matched"] == pytest.approx(np.sqrt((4 + 25) / 2 / 2))


def test_subsample_is_irregular_sorted_without_replacement_and_seeded():
    idx = subsample(500, 100, 30, seed=7)
    assert idx.shape == (500, 30) and idx.min() >= 0 and idx.max() < 100
    assert (np.diff(idx, axis=1) > 0).all()  # sorted, distinct
    assert len({tuple(r) for r in idx}) > 490  # independent per spiral
    gaps = np.diff(idx, axis=1)
    assert gaps.min() == 1 and gaps.max() > 5  # irregular
    # Uniform without replacement: every index is kept with probability 30 / 100.
    assert np.bincount(idx.ravel(), minlength=100).mean() / 500 == pytest.approx(0.3)
    assert (np.bincount(idx.ravel(), minlength=100) / 500 > 0.2).all()
    np.testing.assert_array_equal(idx, subsample(500, 100, 30, seed=7))
    assert not np.array_equal(idx, subsample(500, 100, 30, seed=8))
    np.testing.assert_array_equal(subsample(3, 100, 100), np.tile(np.arange(100), (3, 1)))
    with pytest.raises(ValueError, match="n must be between 1 and n_obs"):
        subsample(3, 100, 101)


def test_rmse_by_hand():
    prediction = np.array([[[0.0, 0.0], [3.0, 4.0]]])
    assert rmse(prediction, np.zeros_like(prediction)) == pytest.approx(math.sqrt(25 / 4))
    assert rmse(np.ones((5, 7, 2)) * 1.5, np.ones((5, 7, 2))) == pytest.approx(0.5)


def test_poisson_events_follow_their_intensity():
    ev = poisson_events(n_sequences=400, t_end=10.0, scale=2.0, seed=1)
    counts = ev.mask.sum(1)
    expected = [ev.scale * (ev.t_end - (np.cos(w * ev.t_end + p) - np.cos(p)) / w)
                for w, p in zip(ev.omega, ev.phase)]
    # Poisson counts: mean equals the integrated intensity; variance equals the mean.
    assert counts.mean() == pytest.approx(np.mean(expected), rel=0.05)
    assert np.var(counts - expected) == pytest.approx(np.mean(expected), rel=0.25)
    for i in range(5):
        s = ev.times[i][ev.mask[i]]
        assert (np.diff(s) > 0).all() and s.min() >= 0 and s.max() <= ev.t_end
        assert (ev.times[i][~ev.mask[i]] == 0).all()


# -- model pieces against NumPy/SciPy -------------------------------------------------
def _numpy_mlp(layer, activation):
    w1, b1 = (v.numpy() for v in layer.inner.weights)
    w2, b2 = (v.numpy() for v in layer.outer.weights)
    act = {"elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0))),
           "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh}[activation]
    return lambda z: act(z @ w1 + b1) @ w2 + b2


def _small_model(**kwargs):
    keras.utils.set_random_seed(0)
    return LatentODE(rtol=TOL, atol=TOL, **kwargs)


def test_observation_log_likelihood_matches_scipy_at_irregular_padded_times():
    model = _small_model(obs_std=0.4)
    rng = np.random.default_rng(0)
    t = np.array([[0.0, 0.3, 1.1, 0.0], [0.2, 0.25, 0.9, 1.7], [0.5, 1.3, 0.0, 0.0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
    x = rng.normal(size=(3, 4, 2))
    z0 = rng.normal(size=(3, 4))
    got = model.observation_log_likelihood(z0, x, t, mask).numpy()

    f, dec = _numpy_mlp(model.dynamics, "elu"), _numpy_mlp(model.decoder, "relu")
    for b in range(3):
        times = t[b][mask[b]]
        sol = integrate.solve_ivp(lambda _, z: f(z), (0.0, times[-1]), z0[b], t_eval=times,
                                  method="DOP853", rtol=1e-11, atol=1e-12)
        want = stats.norm.logpdf(x[b][mask[b]], dec(sol.y.T), 0.4).sum()
        assert got[b] == pytest.approx(want, rel=1e-7)


def test_elbo_is_likelihood_minus_analytic_kl():
    model = _small_model()
    x = np.random.default_rng(1).normal(size=(2, 5, 2))
    t = np.tile(np.linspace(0.1, 1.0, 5), (2, 1))
    mean, logvar = model.encode(x, t)
    z0 = model.sample_z0(mean, logvar, seed=(3, 4))
    want = model.observation_log_likelihood(z0, x, t) - normal_kl(mean, logvar)
    np.testing.assert_allclose(model.elbo(x, t, seed=(3, 4)), want, rtol=1e-12)
    # The KL against the two-Gaussian closed form, dimension by dimension.
    m, v = mean.numpy(), np.exp(logvar.numpy())
    kl = 0.5 * np.sum(v + m**2 - 1 - np.log(v), -1)
    np.testing.assert_allclose(normal_kl(mean, logvar), kl, rtol=1e-12)


def test_encoder_ignores_padding():
    model = _small_model()
    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(1, 6, 2)), np.sort(rng.uniform(0, 2, (1, 6)), 1)
    padded_x = np.concatenate([x, rng.normal(size=(1, 3, 2)) * 100], 1)
    padded_t = np.concatenate([t, [[7.0, 8.0, 9.0]]], 1)
    mask = np.arange(9)[None] < 6
    for a, b in zip(model.encode(x, t), model.encode(padded_x, padded_t, mask)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_poisson_log_likelihood_closed_form_for_constant_intensity():
    model = _small_model(obs_dim=0, intensity_units=8)
    # lambda(z) = softplus(0 * hidden + c): constant.
    model.intensity.outer.kernel.assign(np.zeros((8, 1)))
    model.intensity.outer.bias.assign([0.7])
    rate = math.log1p(math.exp(0.7))
    t = np.array([[0.5, 1.0, 3.0, 0.0], [0.1, 0.2, 0.3, 4.5]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    z0 = np.random.default_rng(3).normal(size=(2, 4))
    got = model.event_log_likelihood(z0, t, 5.0, mask).numpy()
    want = mask.sum(1) * math.log(rate) - rate * 5.0
    np.testing.assert_allclose(got, want, rtol=1e-8)
    np.testing.assert_allclose(
        poisson_log_likelihood(np.log(rate) * np.ones((2, 4)), rate * 5.0 * np.ones(2), mask),
        want, rtol=1e-12)


def test_poisson_log_likelihood_against_quadrature_for_a_moving_state():
    model = _small_model(obs_dim=0, intensity_units=8)
    # dz/dt = c (constant): z(t) = z0 + c t, and lambda(z(t)) varies along it.
    model.dynamics.outer.kernel.assign(np.zeros((20, 4)))
    c = np.array([0.5, -0.3, 0.2, 0.8])
    model.dynamics.outer.bias.assign(c)
    lam = _numpy_mlp(model.intensity, "tanh")
    t = np.array([[0.4, 1.7, 2.2]])
    z0 = np.array([[0.1, 0.2, -0.4, 0.3]])
    got = float(model.event_log_likelihood(z0, t, 3.0).numpy()[0])

    def rate(s):
        return float(np.logaddexp(0.0, lam((z0[0] + c * s)[None]))[0, 0])  # softplus

    integral, _ = integrate.quad(rate, 0.0, 3.0, epsabs=1e-12, epsrel=1e-12)
    want = sum(math.log(rate(s)) for s in t[0]) - integral
    assert got == pytest.approx(want, rel=1e-8)


def test_elbo_gradients_match_backprop_through_rk4_and_finite_differences():
    x = np.random.default_rng(4).normal(size=(2, 4, 2))
    t = np.array([[0.1, 0.4, 0.5, 1.2], [0.3, 0.6, 0.9, 1.0]])

    def gradient(model):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(model.elbo(x, t, seed=(1, 2)))
        return loss, tape.gradient(loss, model.trainable_variables)

    adjoint = _small_model()
    # The reference: the same weights, backpropagation through fine fixed RK4 steps.
    reference = _small_model(method="rk4", odeint_kwargs={"options": {"step_size": 1e-3}})
    _, got = gradient(adjoint)
    _, want = gradient(reference)
    for g, w, v in zip(got, want, adjoint.trainable_variables):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8 * np.abs(w).max(), err_msg=v.path)
    # Finite differences along a random direction of one dynamics kernel (a step of
    # 1e-3: smaller steps drown in the adaptive solver's own noise).
    var = adjoint.dynamics.inner.kernel
    index = [v.path for v in adjoint.trainable_variables].index(var.path)
    direction = np.random.default_rng(5).normal(size=var.shape)
    base, eps = var.numpy(), 1e-3
    values = []
    for sign in (1, -1):
        var.assign(base + sign * eps * direction)
        values.append(float(-tf.reduce_sum(adjoint.elbo(x, t, seed=(1, 2)))))
    var.assign(base)
    fd = (values[0] - values[1]) / (2 * eps)
    assert np.sum(got[index].numpy() * direction) == pytest.approx(fd, rel=1e-5)


def test_elbo_is_finite_and_decreases_on_tiny_data():
    d = spirals(n_spirals=24, n_train=16, noise_std=0.3, seed=0)
    idx = subsample(24, 100, 12, seed=0)
    x = np.take_along_axis(d.noisy[:16, :100], idx[:16, :, None], 1)
    t = d.t[idx[:16]]
    keras.utils.set_random_seed(0)
    model = LatentODE(obs_std=0.3, rtol=1e-6, atol=1e-6)
    opt = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.elbo(x, t, seed=(0, 0)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(12)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0]
    assert model.stats.as_dict()["nfe_backward"] > 0


def test_latent_ode_saves_and_loads(tmp_path):
    model = _small_model(obs_std=0.2, intensity_units=5)
    x = np.random.default_rng(6).normal(size=(2, 3, 2))
    t = np.array([[0.1, 0.2, 0.7], [0.3, 0.5, 0.6]])
    path = tmp_path / "latent.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.obs_std == 0.2 and loaded.intensity_units == 5 and loaded.rtol == TOL
    for a, b in zip(model.encode(x, t), loaded.encode(x, t)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(model.elbo(x, t, seed=(1, 1)), loaded.elbo(x, t, seed=(1, 1)),
                               rtol=1e-9)


def test_deeper_dynamics_add_a_hidden_layer_and_survive_save_and_load(tmp_path):
    one, two = _small_model(), _small_model(dynamics_layers=2)
    units = one.dynamics_units
    assert two.count_params() - one.count_params() == units * units + units
    z = tf.constant(np.random.default_rng(2).normal(size=(3, one.latent_dim)))
    # By hand: two ELU layers, then the linear output.
    w = [v.numpy() for v in two.dynamics.weights]  # inner, outer, then the deeper layer
    elu = tf.nn.elu
    hand = elu(elu(z @ w[0] + w[1]) @ w[4] + w[5]) @ w[2] + w[3]
    np.testing.assert_allclose(two.dynamics(z), hand, rtol=1e-12)
    path = tmp_path / "deeper.keras"
    two.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.dynamics_layers == 2
    np.testing.assert_allclose(loaded.dynamics(z), hand, rtol=1e-12)
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        _small_model(dynamics_layers=0)
    # The experiment labels such runs and keeps their files apart from the paper's.
    import types

    from experiments import latent_ode

    args = types.SimpleNamespace(method="tf_dopri5", tol=1.49e-8, lr_decay="none",
                                 dynamics_layers=2)
    label = latent_ode.solver_label("latent_ode", args)
    assert label == "tf_dopri5 1.49e-08 (backpropagated), 2-layer dynamics"
    assert latent_ode.is_variant(label) and not latent_ode.is_variant(label.split(",")[0])
    stem = latent_ode._stem("latent_ode", 0.1, 30, 0, args)
    assert stem == "latent_ode_noise0.1_n30_tf_dopri5_dyn2"


def test_event_only_encoder_reads_times_and_observation_models_need_x():
    events = _small_model(obs_dim=0, intensity_units=4)
    t = np.array([[0.5, 1.0, 3.0], [0.2, 2.0, 2.5]])
    mean, _ = events.encode(None, t)
    shifted, _ = events.encode(None, t + [[0.0, 0.0, 0.4], [0.0, 0.0, 0.0]])
    assert not np.allclose(mean[0], shifted[0]) and np.allclose(mean[1], shifted[1])
    with pytest.raises(ValueError, match="pass the observations x"):
        _small_model().encode(None, t)


def test_poisson_needs_an_intensity_network():
    with pytest.raises(ValueError, match="intensity_units > 0"):
        _small_model().latent_trajectory(np.zeros((1, 4)), [1.0], with_intensity=True)


def test_gaussian_log_prob_keeps_a_python_std_in_float64():
    from tfode.latent import gaussian_log_prob

    x = np.linspace(-3.0, 5.0, 7)
    got = gaussian_log_prob(tf.constant(x), tf.zeros(7, tf.float64), 0.3).numpy()
    # (A float32 round trip of 0.3 is off by 4e-8 relative: 1e-7 in the ELBO.)
    np.testing.assert_allclose(got, stats.norm.logpdf(x, scale=0.3), rtol=1e-14)


def test_training_resumed_from_its_checkpoint_is_bitwise_the_uninterrupted_run(tmp_path):
    from experiments._common import fit

    d = spirals(n_spirals=16, n_train=12, noise_std=0.3, seed=0)
    idx = subsample(16, d.n_obs, 6, seed=1)
    x_all = np.take_along_axis(d.noisy[:, :d.n_obs], idx[..., None], 1)
    t_all = d.t[idx]

    def draw(i):
        pick = np.random.default_rng([0, i]).choice(12, 4, replace=False)
        return x_all[pick], t_all[pick], np.array([0, i], np.int64)

    def train(iters, path, resume=False):
        model = _small_model(obs_std=0.3)
        history = fit(lambda b: -tf.reduce_mean(model.elbo(b[0], b[1], seed=b[2])),
                      model.trainable_variables, keras.optimizers.Adam(0.01), iters, "run",
                      data=draw, checkpoint=path, checkpoint_every=2, resume=resume)
        return model, history

    whole, h_whole = train(5, tmp_path / "whole.npz")
    train(3, tmp_path / "part.npz")  # stopped after 3 iterations (checkpoint at 3, the end)
    resumed, h_resumed = train(5, tmp_path / "part.npz", resume=True)
    assert [h["loss"] for h in h_resumed] == [h["loss"] for h in h_whole]
    for a, b in zip(resumed.trainable_variables, whole.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="another run"):
        fit(lambda b: tf.constant(0.0, tf.float64), [tf.Variable([1.0])],
            keras.optimizers.Adam(0.01), 5, "other", checkpoint=tmp_path / "part.npz",
            resume=True)


def test_a_sparse_history_resumes_after_a_crash_bitwise_with_its_rows_in_columns(tmp_path):
    from experiments._common import fit

    def train(iters, path, crash_at=None, resume=False):
        keras.utils.set_random_seed(0)
        w = tf.Variable(np.ones(3, np.float32))

        def draw(i):
            if i == crash_at:
                raise KeyboardInterrupt  # killed between two checkpoints
            return np.random.default_rng([0, i]).normal(size=3).astype(np.float32)

        history = fit(lambda b: tf.reduce_sum((w - b) ** 2), [w], keras.optimizers.Adam(0.1),
                      iters, "run", data=draw, checkpoint=path, checkpoint_every=2,
                      resume=resume, history_every=3,
                      evaluate=lambda: {"w0": float(w[0])}, evaluate_every=5)
        return w.numpy(), history

    w_whole, h_whole = train(8, tmp_path / "whole.npz")
    assert [h["iteration"] for h in h_whole] == [3, 5, 6, 8]  # kept, evaluated, last
    assert ["w0" in h for h in h_whole] == [False, True, False, False]
    with pytest.raises(KeyboardInterrupt):
        train(8, tmp_path / "part.npz", crash_at=4)  # its checkpoint is at iteration 4
    with np.load(tmp_path / "part.npz") as saved:  # columns, not one JSON row each
        assert saved["hist:iteration"].tolist() == [3, 4]
    w_resumed, h_resumed = train(8, tmp_path / "part.npz", resume=True)
    assert h_resumed[-1]["iteration"] == 8
    assert [(h["iteration"], h["loss"], h.get("w0")) for h in h_resumed] == \
        [(h["iteration"], h["loss"], h.get("w0")) for h in h_whole]
    np.testing.assert_array_equal(w_resumed, w_whole)


def test_noise_calibration_picks_the_level_nearest_the_papers_rnn_row():
    from experiments import latent_ode

    paper = latent_ode.PAPER_TABLE2["RNN"]
    rows = [{"key": key, "noise": noise, "n": n, "rmse": paper[n] * factor}
            for noise, factor in ((0.05, 0.5), (0.1, 1.1), (0.3, 2.0))
            for key in ("rnn", "rnn_dt") for n in paper]
    rows += [{"key": "latent_ode", "noise": 0.2, "n": n, "rmse": paper[n]} for n in paper]
    got = latent_ode.calibrate_noise(rows)
    assert got["chosen_noise"] == 0.1
    assert [lv["noise"] for lv in got["levels"]] == [0.05, 0.1, 0.3]
    assert got["levels"][0]["distance"] == pytest.approx(math.log(2.0))
    assert latent_ode.calibrate_noise(rows[:6]) is None  # one level only
    # A GRU baseline is a baseline of its own, not averaged into the tanh RNN's rows.
    rows += [{"key": "rnn", "solver": "GRU cell", "noise": 0.3, "n": n, "rmse": paper[n]}
             for n in paper]
    got = latent_ode.calibrate_noise(rows)
    assert got["chosen_noise"] == 0.3 and got["closest_model"] == "rnn (GRU cell)"
    # Levels are compared on the seeds they share: seeds 1 and 2, trained at one level
    # only, would move its mean (here far from the paper), and are left out.
    rows = rows[:18] + [{"key": key, "noise": 0.1, "n": n, "seed": seed, "rmse": paper[n] * 20}
                        for seed in (1, 2) for key in ("rnn", "rnn_dt") for n in paper]
    got = latent_ode.calibrate_noise(rows)
    assert got["chosen_noise"] == 0.1 and got["seeds"] == [0]
    assert got["levels"][1]["distance"] == pytest.approx(math.log(1.1))
    # With no seed in common, every seed counts.
    rows = [dict(r, seed=1) if r["noise"] == 0.05 else r for r in rows]
    got = latent_ode.calibrate_noise(rows)
    assert got["seeds"] == [0, 1, 2]
    assert got["levels"][1]["distance"] == pytest.approx(math.log(np.mean([1.1, 20, 20])))


def test_the_late_curve_is_the_mean_of_the_last_tenths_curve_points():
    from experiments.latent_ode import curve_tail

    history = [{"iteration": i, "loss": 0.0} for i in range(1, 1001)]
    for h in history[24::25]:  # a curve point every 25 iterations
        h["test_rmse"] = h["iteration"] / 1000
    assert curve_tail(history) == pytest.approx(np.mean([0.925, 0.95, 0.975, 1.0]))
    assert curve_tail(history, share=0.03) == pytest.approx(np.mean([0.975, 1.0]))
    assert curve_tail([{"iteration": i, "loss": 0.0} for i in range(1, 9)]) is None


def test_headline_takes_the_papers_method_per_seed_and_the_fast_path_for_the_rest():
    from experiments import latent_ode

    adjoint, fast = "odeint 1.49e-08 (adjoint)", "tf_dopri5 1.49e-08 (backpropagated)"

    def row(seed, solver, rmse, iterations=2000, n=30, key="latent_ode"):
        return {"key": key, "seed": seed, "solver": solver, "rmse": rmse, "n": n,
                "noise": 0.1, "iterations": iterations}

    rows = [row(0, adjoint, 0.30), row(0, fast, 0.90), row(1, fast, 0.40),
            row(2, fast, 0.50), row(1, fast + ", cosine lr", 0.01),
            row(3, fast + ", 2-layer dynamics", 0.01),
            row(3, fast + ", 2-layer dynamics", 0.01, iterations=9000),
            row(2, adjoint, 0.05, iterations=4000), row(3, "-", 0.02, key="rnn")]
    (got,) = latent_ode.headline(rows, 0.1, 2000)
    assert got["seeds"] == [0, 1, 2] and got["late_curve"] == "-"  # no curves recorded
    assert got["mean"] == pytest.approx(0.40) and got["std"] == pytest.approx(np.std([.3, .4, .5]))
    assert got["methods"] == f"{adjoint}: seed 0; {fast}: seed 1, 2"
    assert got["paper"] == 0.1642
    assert latent_ode.headline(rows, 0.3, 2000) == []
    (longest,) = latent_ode.headline(rows, 0.1)  # the longest constant-rate training
    assert longest["iterations"] == 4000 and longest["seeds"] == [2]
    for r, tail in zip(rows[:4], [0.2, 0.8, 0.3, 0.6], strict=True):
        r["rmse_tail"] = tail
    (got,) = latent_ode.headline(rows, 0.1, 2000)  # the rows the headline took
    assert got["late_curve"] == f"{np.mean([.2, .3, .6]):.4f} ± {np.std([.2, .3, .6]):.4f} (3)"
    assert latent_ode.headline(rows, 0.3) == []


# -- the experiment --------------------------------------------------------------------
def test_experiment_tiny_run_writes_table_figures_and_resumes(tmp_path, capsys):
    from experiments import latent_ode

    argv = ["--iters", "2", "--rnn-iters", "3", "--batch", "20", "--tol", "1e-4", "--n-obs",
            "30", "--noise", "0.3", "--poisson-iters", "2", "--poisson-train", "20",
            "--poisson-test", "4", "--poisson-batch", "4", "--curve-every", "2",
            "--out", str(tmp_path)]
    summary = latent_ode.main(argv)
    assert {r["model"] for r in summary["runs"]} == set(latent_ode.MODELS.values())
    for r in summary["runs"]:
        assert np.isfinite(r["rmse"]) and r["rmse"] > 0
    lo = next(r for r in summary["runs"] if r["key"] == "latent_ode")
    assert lo["nfe_forward"] > 0 and lo["nfe_backward"] > 0
    # The error along the horizon: four equal quarters of the 100 future points.
    for r in summary["runs"]:
        quarters = np.array(r["rmse_by_quarter"])
        assert quarters.shape == (4,)
        assert np.sqrt(np.mean(quarters ** 2)) == pytest.approx(r["rmse"], rel=1e-12)
    assert np.isfinite(lo["rmse_recon"]) and lo["rmse_recon"] > 0
    # The learning curve's last point is the row's test RMSE (the same final weights).
    curve = (tmp_path / "history_latent_ode_noise0.3_n30.csv").read_text().splitlines()
    assert curve[0].endswith(",test_rmse") and curve[1].endswith(",")
    assert float(curve[2].split(",")[-1]) == pytest.approx(lo["rmse"], rel=1e-9)
    table = (tmp_path / "table2.md").read_text()
    assert "Latent ODE (paper)" in table and "0.1642" in table
    # Two iterations, a curve point at each second one: the late curve is the last point.
    assert lo["rmse_tail"] == pytest.approx(lo["rmse"], rel=1e-9)
    assert f"| Latent ODE, late-curve mean | {lo['solver']} | 0.3 | 2 | {lo['rmse_tail']:.4f} |" \
        in table
    assert {r["history"] for r in summary["runs"]} == {
        p.name for p in tmp_path.glob("history_*.csv")}
    for name in ("figure8_spirals.png", "figure7_poisson.png", "table2.csv", "results.json",
                 "learning_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    ll = summary["poisson"]["test_loglik_per_event"]
    assert set(ll) == {"latent_ode", "true_intensity", "homogeneous"}
    # --resume skips every finished setting.
    again = latent_ode.main(argv + ["--resume", "--skip", "poisson"])
    assert [r["train_s"] for r in again["runs"]] == [r["train_s"] for r in summary["runs"]]
    assert json.loads((tmp_path / "rows.json").read_text()) == again["runs"]
    # --reevaluate recomputes a recorded row's measures from its checkpoint, untrained.
    recorded = json.loads((tmp_path / "rows.json").read_text())
    stripped = [{k: v for k, v in r.items() if k not in ("rmse_by_quarter", "rmse_recon")}
                for r in recorded]
    (tmp_path / "rows.json").write_text(json.dumps(stripped))
    redone = latent_ode.main(argv + ["--resume", "--reevaluate", "--skip", "poisson"])
    key = lambda r: (r["key"], r["solver"])  # noqa: E731
    for a, b in zip(sorted(redone["runs"], key=key), sorted(recorded, key=key), strict=True):
        assert {k: v for k, v in a.items() if a[k] != b.get(k)} == {}
    # --z0-split loads the recorded latent ODE and measures it from three initial
    # states; from the encoder's, it is the recorded row's RMSE again.
    (split,) = latent_ode.main(argv + ["--z0-split", "--z0-steps", "3"])["z0_split"]
    assert split["encoder_rmse"] == pytest.approx(lo["rmse"], rel=1e-9)
    assert split["recorded_rmse"] == lo["rmse"] and split["iterations"] == 2
    for name in ("fitted", "oracle"):
        assert np.isfinite(split[f"{name}_rmse"]) and len(split[f"{name}_by_quarter"]) == 4
    assert "encoder_rmse" in (tmp_path / "z0_split.md").read_text()
    latent_ode.main(argv + ["--z0-split", "--z0-steps", "3"])  # the same row, replaced
    assert len(json.loads((tmp_path / "z0_split.json").read_text())) == 1
    with pytest.raises(ValueError, match="no recorded latent ODE row"):
        latent_ode.main(argv + ["--z0-split", "--seeds", "7"])
    # --method-check runs the recorded weights (trained through SciPy's odeint with the
    # adjoint) through the in-graph dopri5 as well: the same test RMSE, loss and
    # gradient, to the tolerance, from two independent solvers and gradients.
    (check,) = latent_ode.main(argv + ["--method-check", "tf_dopri5"])["method_check"]
    assert check["trained_rmse"] == pytest.approx(lo["rmse"], rel=1e-9)
    assert check["other_rmse"] == pytest.approx(lo["rmse"], rel=1e-3)
    assert check["other_loss"] == pytest.approx(check["trained_loss"], rel=1e-3)
    assert 0 < check["grad_rel_diff"] < 1e-2 and check["grad_cosine"] > 0.9999
    assert "grad_rel_diff" in (tmp_path / "method_check.md").read_text()
    # A check against another solver joins the table; one repeated replaces its row.
    latent_ode.main(argv + ["--method-check", "dopri5"])
    latent_ode.main(argv + ["--method-check", "tf_dopri5"])
    table = json.loads((tmp_path / "method_check.json").read_text())
    assert [(r["trained"], r["other"]) for r in table] == [
        (lo["solver"], "tf_dopri5 0.0001 (backpropagated)"),
        (lo["solver"], "dopri5 0.0001 (adjoint)")]
    assert table[0]["other_rmse"] == pytest.approx(check["other_rmse"], rel=1e-12)
    with pytest.raises(SystemExit):
        latent_ode.main(argv + ["--method-check", "rk99"])
    # Rows of other training data do not join this folder's table; in a folder of their
    # own they also record their error split by the default range's windows.
    wide = latent_ode.main(argv[:-2] + ["--models", "rnn_dt", "--skip", "poisson",
                                        "--train-starts", "cover",
                                        "--out", str(tmp_path / "cover")])["runs"][0]
    from experiments.latent_data import spirals

    share = spirals(noise_std=0.3).unseen_future()[800:].mean()
    assert share > 0.1 and wide["unseen_share"] < 0.01
    assert wide["rmse"] == pytest.approx(np.sqrt(
        (1 - share) * wide["rmse_default_seen"] ** 2 + share * wide["rmse_default_unseen"] ** 2))
    assert "rmse_default_seen" not in lo
    with pytest.raises(ValueError, match="--train-starts shared, not example"):
        latent_ode.main(argv + ["--resume", "--train-starts", "example"])
    assert lo["train_starts"] == "shared" and lo["unseen_share"] > 0
    share = lo["unseen_share"]
    assert lo["rmse"] == pytest.approx(np.sqrt(
        (1 - share) * lo["rmse_seen"] ** 2 + share * lo["rmse_unseen"] ** 2))
    with pytest.raises(SystemExit):
        latent_ode.main(argv + ["--reevaluate"])
    with pytest.raises(SystemExit):
        latent_ode.main(argv + ["--dynamics-layers", "0"])
    # A checkpoint that a longer, stopped run moved past its row is not evaluated as it.
    import shutil

    ckpt = tmp_path / "checkpoint_latent_ode_noise0.3_n30.npz"
    shutil.copy(ckpt, tmp_path / "at2.npz")
    rows_at2 = (tmp_path / "rows.json").read_text()
    latent_ode.main(argv + ["--resume", "--skip", "poisson", "--iters", "3",
                            "--models", "latent_ode"])
    (tmp_path / "rows.json").write_text(rows_at2)  # as if the run to 3 had been stopped
    capsys.readouterr()
    kept = latent_ode.main(argv + ["--resume", "--reevaluate", "--skip", "poisson",
                                   "--models", "latent_ode"])
    assert "NOT re-evaluated, checkpoint_latent_ode_noise0.3_n30.npz holds iteration 3, " \
        "not the recorded row's 2" in capsys.readouterr().out
    assert next(r for r in kept["runs"] if r["key"] == "latent_ode") == lo
    shutil.move(tmp_path / "at2.npz", ckpt)
    # More iterations asked of a finished setting: it continues from its checkpoint.
    longer = latent_ode.main(argv + ["--resume", "--skip", "poisson", "--iters", "3"])
    lo3 = next(r for r in longer["runs"] if r["key"] == "latent_ode")
    assert lo3["iterations"] == 3 and lo3["train_s"] > lo["train_s"]
    history = (tmp_path / "history_latent_ode_noise0.3_n30.csv").read_text().splitlines()
    assert len(history) == 1 + 3
    rnns = [r for r in longer["runs"] if r["key"] != "latent_ode"]
    assert rnns == [r for r in again["runs"] if r["key"] != "latent_ode"]
    # A longer RNN run is a new run (its cosine schedule spans the run): retrained.
    rnn4 = latent_ode.main(argv + ["--resume", "--skip", "poisson", "--iters", "3",
                                   "--rnn-iters", "4", "--models", "rnn"])
    row = next(r for r in rnn4["runs"] if r["key"] == "rnn")
    assert row["iterations"] == 4 and row["rnn_decay"] == "cosine"
    history = (tmp_path / "history_rnn_noise0.3_n30.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in history[1:]] == ["1", "2", "3", "4"]
    # GRU baselines join the same folder as rows of their own, labelled with the cell.
    gru = latent_ode.main(argv + ["--resume", "--skip", "poisson", "--iters", "3",
                                  "--models", "rnn,rnn_dt", "--rnn-cell", "gru"])
    cells = sorted((r["key"], r["solver"]) for r in gru["runs"] if r["key"] != "latent_ode")
    assert {r["iterations"] for r in gru["runs"] if r["solver"] == "GRU cell"} == {3}
    assert cells == [("rnn", "-"), ("rnn", "GRU cell"), ("rnn_dt", "-"),
                     ("rnn_dt", "GRU cell")]
    assert (tmp_path / "history_rnn_dt_noise0.3_n30_gru.csv").exists()
    assert "GRU cell" in (tmp_path / "table2.md").read_text()
    # A latent ODE with a decayed learning rate is a row (and files) of its own.
    cos = latent_ode.main(argv + ["--resume", "--skip", "poisson", "--iters", "3",
                                  "--models", "latent_ode", "--lr-decay", "cosine"])
    solvers = sorted(r["solver"] for r in cos["runs"] if r["key"] == "latent_ode")
    assert solvers == ["odeint 0.0001 (adjoint)", "odeint 0.0001 (adjoint), cosine lr"]
    assert (tmp_path / "history_latent_ode_noise0.3_n30_cosine.csv").exists()
    # A run of another noise level with more iterations leaves the 0.3 rows alone.
    other = latent_ode.main(argv[:-2] + ["--resume", "--skip", "poisson", "--iters", "4",
                                         "--models", "latent_ode", "--noise", "0.2",
                                         "--out", str(tmp_path)])
    kept = [(r["noise"], r["iterations"]) for r in other["runs"]
            if r["key"] == "latent_ode" and r["solver"] == "odeint 0.0001 (adjoint)"]
    assert sorted(kept) == [(0.2, 4), (0.3, 3)]


def test_fit_z0_recovers_the_initial_states_that_generated_the_observations():
    """Observations decoded from known initial states by a latent ODE: the fit, from
    perturbed starts and 12 points of the first half, finds those states, and with them
    the second half it never saw. (A 2-d latent seen through 4-d observations, and
    dynamics that move it, so that the states are identifiable.)"""
    from experiments import latent_ode

    keras.utils.set_random_seed(3)
    model = LatentODE(obs_dim=4, latent_dim=2, obs_std=0.1, method="tf_dopri5", rtol=1e-7,
                      atol=1e-7)
    for v in model.dynamics.trainable_variables:
        v.assign(3.0 * v)
    rng = np.random.default_rng(0)
    times = np.linspace(0.0, 2.0, 40)
    z_true = rng.normal(0.0, 0.5, (5, 2))

    def decoded(z0):
        return model.predict_path(None, None, tf.constant(times), z0=tf.constant(z0))[0].numpy()

    truth = decoded(z_true)
    index = np.sort(rng.permuted(np.tile(np.arange(20), (5, 1)), axis=1)[:, :12], 1)
    targets = np.take_along_axis(truth, index[..., None], 1)
    start = z_true + rng.normal(0.0, 0.3, z_true.shape)
    fitted = latent_ode.fit_z0(model, start, times, targets, index, std=1e-3, steps=500)
    before = rmse(decoded(start)[:, 20:], truth[:, 20:])
    after = rmse(decoded(fitted)[:, 20:], truth[:, 20:])
    assert after < 1e-4 * before
    np.testing.assert_allclose(fitted, z_true, atol=1e-4)


def test_cosine_schedules_fall_to_one_percent_at_the_last_iteration():
    import argparse

    from experiments.latent_ode import _optimizer

    args = argparse.Namespace(lr=0.01, iters=40, lr_decay="cosine", rnn_lr=0.02,
                              rnn_iters=10, rnn_decay="cosine", rnn_clipnorm=1.0)
    for kind, lr0, iters in (("latent_ode", 0.01, 40), ("rnn", 0.02, 10)):
        sched = _optimizer(kind, args)._learning_rate  # the schedule itself
        assert float(sched(0)) == pytest.approx(lr0)
        assert float(sched(iters // 2)) == pytest.approx(lr0 * (0.01 + 0.99 * 0.5))
        assert float(sched(iters)) == pytest.approx(lr0 * 0.01)
    args.lr_decay = "none"
    assert float(_optimizer("latent_ode", args).learning_rate) == pytest.approx(0.01)


def test_b4_benchmark_runs_both_paths_and_writes_json(tmp_path):
    from experiments import bench_latent

    rows = bench_latent.main(["--batch", "4", "--n-obs", "5", "--tols", "1e-6", "--repeats",
                              "1", "--out", str(tmp_path)])
    try:
        import torchdiffeq  # noqa: F401
        expected = list(bench_latent.METHODS + bench_latent.TORCH)
    except ImportError:
        expected = list(bench_latent.METHODS)
    assert [r["method"] for r in rows] == expected
    # Every side's gradient near the tight reference, on the same weights and noise.
    assert all(r["grad_rel_error"] < 1e-3 and r["step_s"] > 0 for r in rows)
    saved = json.loads((tmp_path / "latent_b4_batch4_default_threads.json").read_text())
    assert saved["machine"]["cores"] and len(saved["rows"]) == len(expected)
    if len(expected) == 4:
        assert rows[0]["vs_torch_adjoint"] == pytest.approx(rows[0]["step_s"] / rows[2]["step_s"])


def test_rows_of_runs_sharing_a_folder_are_merged_not_overwritten(tmp_path):
    from experiments import latent_ode

    def row(key, solver, n, noise=0.1, **extra):
        return {"key": key, "solver": solver, "n": n, "noise": noise, **extra}

    path = tmp_path / "rows.json"
    other = [row("latent_ode", "odeint 1e-05 (adjoint)", 30), row("rnn", "-", 30),
             row("rnn", "GRU cell", 50)]  # another observation count: another run's
    path.write_text(json.dumps(other + [row("rnn", "GRU cell", 30, stale=True)]))
    mine = [row("rnn", "GRU cell", 30)]
    plan = {latent_ode._row_key(r) for r in mine + [row("rnn_dt", "GRU cell", 30)]}
    merged = latent_ode._merge_rows(path, mine, plan)
    assert merged == other + mine  # the other runs' rows kept, this run's own replaced
    assert latent_ode._merge_rows(tmp_path / "none.json", mine, set()) == mine
    with latent_ode._locked(path):  # a second run waits for the lock; the file stays
        assert json.loads(path.read_text())[0] == other[0]


def test_memory_growth_benchmark_measures_each_method_in_its_own_process(tmp_path):
    from experiments import bench_growth

    rows = bench_growth.main(["--methods", "odeint,tf_dopri5", "--batch", "8", "--warmup",
                              "1", "--steps", "2", "--out", str(tmp_path)])
    assert [r["method"] for r in rows] == ["odeint", "tf_dopri5"]
    for r in rows:
        assert r["rss_after_mib"] > 100 and np.isfinite(r["growth_mib_per_step"])
        assert r["nfe_forward"] > 0
    assert rows[1]["above_baseline_mib_per_step"] == 0.0
    saved = json.loads((tmp_path / "growth_default_threads.json").read_text())
    assert saved["baseline"] == "tf_dopri5" and len(saved["rows"]) == 2


def test_figure8_and_the_headline_are_at_the_calibrated_noise(tmp_path, monkeypatch):
    """With RNN rows at two noise levels, the headline and Figure 8 take the level
    whose RNN rows come nearest the paper's, not this run's noisiest."""
    from experiments import latent_ode

    paper = latent_ode.PAPER_TABLE2["RNN"]

    def fake(kind, data, idx, args, out, seed=0):
        n, noise = np.shape(idx)[-1], data.noise_std
        return {"model": latent_ode.MODELS[kind], "key": kind, "noise": noise, "n": n,
                "seed": seed, "solver": latent_ode.solver_label(kind, args),
                "iterations": args.iters, "train_starts": "shared",
                "rmse": paper[n] * (1.0 if noise == 0.1 else 3.0)}

    shown = []
    monkeypatch.setattr(latent_ode, "train_spiral_model", fake)
    monkeypatch.setattr(latent_ode, "figure8",
                        lambda args, out, rows, noise=None: shown.append(noise) or out / "f.png")
    summary = latent_ode.main(["--noise", "0.3,0.1", "--skip", "poisson", "--iters", "2",
                               "--out", str(tmp_path)])
    assert summary["noise_calibration"]["chosen_noise"] == 0.1
    assert shown == [0.1] and {h["noise"] for h in summary["headline"]} == {0.1}


def test_figure8_draws_the_headlines_records_whatever_the_run(tmp_path, monkeypatch):
    """Figure 8 is drawn from the recorded rows: the latent ODE the headline takes (the
    paper's method where the seed has it at the headline's iterations, else the fast
    path) at the fewest observations and the first seed, beside the RNN with time gaps
    there; a later run of other settings (another method, n or seed) draws the same."""
    import types
    from pathlib import Path

    from experiments import latent_ode
    from experiments.latent_data import spirals

    data = spirals(noise_std=0.1, seed=0)
    n_test, kept = data.clean.shape[0] - data.n_train, 3
    adjoint, fast = "odeint 1.49e-08 (adjoint)", "tf_dopri5 1.49e-08 (backpropagated)"

    def record(key, n, seed, solver, iterations, stem):
        idx = np.sort(np.random.default_rng(n).choice(data.n_obs, n, replace=False))
        np.savez(tmp_path / f"pred_{stem}.npz", recon=np.zeros((n_test, data.n_obs, 2)),
                 extrap=np.zeros((n_test, 100, 2)), obs_index=np.tile(idx, (n_test, 1)),
                 z=np.zeros((200, kept, 4)))
        return {"key": key, "noise": 0.1, "n": n, "seed": seed, "solver": solver,
                "iterations": iterations, "rmse": 0.1, "history": f"history_{stem}.csv"}

    rows = [record("latent_ode", 30, 0, fast, 300, "lo_fast_30_0"),
            record("latent_ode", 30, 0, adjoint, 300, "lo_adjoint_30_0"),
            record("latent_ode", 30, 0, adjoint + ", cosine lr", 300, "lo_variant"),
            record("latent_ode", 30, 1, fast, 300, "lo_fast_30_1"),
            record("latent_ode", 50, 0, adjoint, 300, "lo_adjoint_50_0"),
            record("rnn_dt", 30, 0, "-", 100, "dt_30_0"),
            record("rnn_dt", 30, 0, "GRU cell", 100, "dt_gru"),
            record("rnn_dt", 30, 1, "-", 100, "dt_30_1")]
    loaded, titles = [], []
    real_load = np.load
    monkeypatch.setattr(latent_ode.np, "load",
                        lambda f, *a, **k: loaded.append(Path(f).name) or real_load(f, *a, **k))
    monkeypatch.setattr(latent_ode, "save_figure",
                        lambda fig, path: titles.append(fig._suptitle.get_text()) or path)
    # This run trained seed 1 at n = 50 on the fast path; the figure stays the headline's.
    args = types.SimpleNamespace(noise=[0.1], n_obs=[50], seeds=[1], method="tf_dopri5",
                                 data_seed=0, train_starts="shared")
    assert latent_ode.figure8(args, tmp_path, rows, 0.1) == tmp_path / "figure8_spirals.png"
    assert sorted(loaded) == ["pred_dt_30_0.npz", "pred_lo_adjoint_30_0.npz"]
    assert titles == [f"Figure 8: noise 0.1, n = 30 irregular observations per spiral; "
                      f"seed 0, latent ODE {adjoint}, 300 iterations"]
    # A longer fast-path run becomes the headline's, and with it the figure's.
    rows.append(record("latent_ode", 30, 0, fast, 600, "lo_fast_30_0_long"))
    loaded.clear()
    latent_ode.figure8(args, tmp_path, rows, 0.1)
    assert sorted(loaded) == ["pred_dt_30_0.npz", "pred_lo_fast_30_0_long.npz"]
    # Missing predictions or a missing RNN row leave any earlier figure.
    (tmp_path / "pred_dt_30_0.npz").unlink()
    assert latent_ode.figure8(args, tmp_path, rows, 0.1) is None
    assert latent_ode.figure8(args, tmp_path, [r for r in rows if r["key"] != "rnn_dt"],
                              0.1) is None
    assert latent_ode.figure8(args, tmp_path, rows, 0.3) is None


def test_an_extension_stopped_midway_keeps_the_rows_it_has_not_replaced(tmp_path, monkeypatch):
    """Settings asked for more iterations than recorded are retrained one by one; a run
    stopped after the first keeps the others' shorter rows in rows.json (a later
    --resume extends them from their checkpoints), and the first's new row replaces its
    old one."""
    from experiments import latent_ode

    argv = ["--models", "latent_ode", "--n-obs", "30,50", "--noise", "0.3", "--batch", "20",
            "--skip", "poisson", "--resume", "--out", str(tmp_path)]

    class Stopped(Exception):
        pass

    trained = []

    def fake(kind, data, idx, args, out, seed=0):
        if args.iters == 3 and trained:
            raise Stopped  # the longer run is stopped during its second setting
        trained.append(kind)
        n = np.shape(idx)[-1]  # observation times per spiral
        return {"model": latent_ode.MODELS[kind], "key": kind, "noise": 0.3, "n": n,
                "seed": seed, "solver": latent_ode.solver_label(kind, args),
                "iterations": args.iters, "train_starts": "shared", "rmse": 0.5}

    monkeypatch.setattr(latent_ode, "train_spiral_model", fake)
    monkeypatch.setattr(latent_ode, "figure8", lambda args, out, rows, noise=None: out / "none.png")
    latent_ode.main(argv + ["--iters", "2"])
    trained.clear()
    first = json.loads((tmp_path / "rows.json").read_text())
    assert sorted((r["n"], r["iterations"]) for r in first) == [(30, 2), (50, 2)]
    with pytest.raises(Stopped):
        latent_ode.main(argv + ["--iters", "3"])
    kept = json.loads((tmp_path / "rows.json").read_text())
    assert sorted((r["n"], r["iterations"]) for r in kept) == [(30, 3), (50, 2)]
