"""tfode.flows: the change of variables against independent Jacobians, Hutchinson's
estimator, the planar flow's determinant and inverse, and round trips."""

import math

import numpy as np
import pytest
import tensorflow as tf

import tfode
from experiments import cnf as cnf_experiment
from experiments.cnf import two_circles, two_moons
from tfode.flows import CNF, HyperPlanarDynamics, PlanarFlow, energy

F64 = tf.float64


def small_cnf(trace="exact", width=4, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    dyn = HyperPlanarDynamics(2, width, hidden=8, dtype="float64")
    cnf = CNF(dyn, t0=0.0, t1=1.0, trace=trace, rtol=1e-10, atol=1e-10, dtype="float64")
    cnf.build((None, 2))
    for v in dyn.trainable_variables:  # weights large enough for a visibly curved flow
        v.assign(np.random.default_rng(seed).normal(0, 0.8, v.shape))
    return cnf


X = np.array([[0.3, -0.5], [1.2, 0.4], [-0.7, 0.9]])


def test_integrated_trace_equals_log_det_of_the_solved_flow_map():
    cnf = small_cnf()
    _, l_end = cnf.integrate(tf.constant(X), cnf.t1, cnf.t0)

    def flow(x):  # the flow map alone, no trace, solved independently
        return tfode.odeint(cnf.dynamics, tf.constant(x), tf.constant([1.0, 0.0], F64),
                            method="dop853", rtol=1e-12, atol=1e-12)[-1].numpy()

    h = 1e-5
    for i, x in enumerate(X):
        jac = np.zeros((2, 2))
        for j in range(2):
            e = np.zeros(2)
            e[j] = h
            jac[:, j] = (flow((x + e)[None])[0] - flow((x - e)[None])[0]) / (2 * h)
        log_det = np.log(abs(np.linalg.det(jac)))
        assert abs(log_det) > 0.05  # the map is not volume-preserving
        # d log p / dt = -tr(df/dz): integrating back from t1 to t0 accumulates
        # +int tr, so log|det dz/dx| = -l_end.
        assert -float(l_end[i]) == pytest.approx(log_det, rel=1e-6, abs=1e-8)


def test_hutchinson_estimate_averages_to_the_exact_trace():
    cnf_exact, cnf_h = small_cnf(), small_cnf(trace="hutchinson")
    z = tf.constant(np.repeat(X[:1], 4000, axis=0))
    exact = -cnf_exact._exact(tf.constant(0.4, F64), tf.concat([z, tf.zeros((4000, 1), F64)], 1))
    for noise in ("rademacher", "gaussian"):
        cnf_h.noise = noise
        e = cnf_h._probe(z)
        if noise == "rademacher":
            assert set(np.unique(e.numpy())) == {-1.0, 1.0}
        state = tf.concat([z, tf.zeros((4000, 1), F64), e], 1)
        est = -cnf_h._hutchinson(tf.constant(0.4, F64), state)[:, 2].numpy()
        se = est.std() / np.sqrt(len(est))
        assert abs(est.mean() - float(exact[0, 2])) < 4 * se + 1e-12


def test_hutchinson_log_density_is_unbiased():
    cnf_exact, cnf_h = small_cnf(), small_cnf(trace="hutchinson")
    x = tf.constant(np.repeat(X[1:2], 2000, axis=0))
    est = cnf_h.log_prob(x).numpy()
    exact = float(cnf_exact.log_prob(tf.constant(X[1:2]))[0])
    assert abs(est.mean() - exact) < 4 * est.std() / np.sqrt(len(est)) + 1e-9


def test_sampling_then_evaluating_round_trips():
    cnf = small_cnf()
    z0 = tf.constant(np.random.default_rng(1).normal(size=(6, 2)))
    x, log_q = cnf.sample(z=z0)
    np.testing.assert_allclose(cnf.log_prob(x).numpy(), log_q.numpy(), rtol=1e-7, atol=1e-8)
    z_back, _ = cnf.integrate(x, cnf.t1, cnf.t0)
    np.testing.assert_allclose(z_back.numpy(), z0.numpy(), atol=1e-7)


def test_cnf_log_density_is_normalised():
    cnf = small_cnf()
    g = np.linspace(-6, 6, 121)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    mass = np.exp(cnf.log_prob(tf.constant(grid)).numpy()).sum() * (g[1] - g[0]) ** 2
    assert mass == pytest.approx(1.0, abs=0.02)


def planar(k=5, seed=0):
    nf = PlanarFlow(k, 2, dtype="float64")
    nf.build()
    rng = np.random.default_rng(seed)
    for v in nf.trainable_variables:
        v.assign(rng.normal(0, 1.0, v.shape))
    return nf


def test_planar_log_det_equals_the_numerical_one():
    nf = planar()
    z = np.random.default_rng(2).normal(size=(4, 2))
    _, logdet = nf(tf.constant(z))
    h = 1e-6
    for i in range(4):
        jac = np.zeros((2, 2))
        for j in range(2):
            e = np.zeros((1, 2))
            e[0, j] = h
            jac[:, j] = (nf(tf.constant(z[i:i + 1] + e))[0].numpy()[0]
                         - nf(tf.constant(z[i:i + 1] - e))[0].numpy()[0]) / (2 * h)
        assert float(logdet[i]) == pytest.approx(np.log(abs(np.linalg.det(jac))), abs=1e-7)


def test_planar_constraint_keeps_it_invertible_and_the_inverse_is_exact():
    nf = planar(8, seed=3)
    wu = tf.reduce_sum(nf.w * nf.constrained_u(), -1).numpy()
    assert np.all(wu >= -1.0 - 1e-12)
    z = tf.constant(np.random.default_rng(4).normal(size=(50, 2)))
    x, logdet = nf(z)
    z_back, logdet_back = nf.inverse(x)
    np.testing.assert_allclose(z_back.numpy(), z.numpy(), atol=1e-10)
    np.testing.assert_allclose(logdet_back.numpy(), logdet.numpy(), atol=1e-10)
    np.testing.assert_allclose(nf.log_prob(x).numpy(), nf.sample(0, z=z)[1].numpy(), atol=1e-9)


def test_energies_and_datasets():
    z = tf.constant(np.random.default_rng(5).normal(size=(100, 2)))
    for name in ("U1", "U2", "U3", "U4"):
        assert np.all(np.isfinite(energy(name, z).numpy()))
    with pytest.raises(ValueError, match="Unknown energy"):
        energy("U9", z)
    rng = np.random.default_rng(0)
    c, m = two_circles(1000, rng), two_moons(1000, rng)
    assert c.shape == m.shape == (1000, 2)
    radii = np.sort(np.linalg.norm(c, axis=1))
    assert radii[:400].mean() == pytest.approx(0.5, abs=0.05)
    assert radii[-400:].mean() == pytest.approx(1.0, abs=0.05)


def test_bad_arguments():
    with pytest.raises(ValueError, match="trace must be"):
        CNF(HyperPlanarDynamics(), trace="approx")
    with pytest.raises(ValueError, match="reduce must be"):
        HyperPlanarDynamics(reduce="max")


@pytest.mark.parametrize("name", ["circles", "moons"])
def test_exact_data_density_is_normalised_and_is_the_generators(name):
    from scipy.stats import gaussian_kde

    g = np.linspace(-2.2, 2.2, 221)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    comp = cnf_experiment.true_component_densities(name, grid)
    mass = comp.sum(0) * (g[1] - g[0]) ** 2
    np.testing.assert_allclose(mass, [0.5, 0.5], atol=3e-3)
    # The generator's own noise level maximises the likelihood of its samples.
    gen = cnf_experiment.DATASETS[name]
    x = gen(2000, np.random.default_rng(1))
    ll = {s: np.mean(np.log(cnf_experiment.true_component_densities(name, x, s).sum(1)))
          for s in (0.04, 0.06, 0.09)}
    assert max(ll, key=ll.get) == 0.06
    # A kernel density estimate of fresh samples (Scott's bandwidth, wider than the
    # noise) is worse, by under a nat; a misplaced exact density would lose to it.
    kde = -np.mean(np.log(gaussian_kde(gen(10000, np.random.default_rng(2)).T)(x.T)))
    assert -ll[0.06] < kde < -ll[0.06] + 1.0


def test_radial_profile_of_two_circles_peaks_at_the_rings():
    radii = np.linspace(0.02, 1.6, 80)
    p = cnf_experiment.radial_profile(
        lambda x: np.log(cnf_experiment.true_component_densities("circles", x).sum(1)), radii)
    assert np.sum(p) * (radii[1] - radii[0]) == pytest.approx(1.0, abs=0.01)
    peaks = cnf_experiment.profile_peaks(radii, p)
    np.testing.assert_allclose(peaks["peaks"], [0.5, 1.0], atol=0.03)
    assert peaks["trough_ratio"] < 0.05
    # One blob: one peak, no trough.
    blob = cnf_experiment.radial_profile(lambda x: -np.sum(x ** 2, 1), radii)
    assert cnf_experiment.profile_peaks(radii, blob)["trough_ratio"] == 1.0


def test_sample_coverage_of_each_component():
    gen = cnf_experiment.DATASETS["circles"]
    ref = gen(5000, np.random.default_rng(0))
    truth = cnf_experiment.measure_fit("circles", gen(4000, np.random.default_rng(1)), ref)
    np.testing.assert_allclose(truth["component_shares"], [0.495, 0.495], atol=0.03)
    assert truth["off_support"] == pytest.approx(0.01, abs=0.01) and truth["both_components"]
    one_ring = gen(8000, np.random.default_rng(1))
    one_ring = one_ring[np.linalg.norm(one_ring, axis=1) > 0.75]
    got = cnf_experiment.measure_fit("circles", one_ring, ref)
    assert got["component_shares"][1] < 0.02 and not got["both_components"]
    blob = cnf_experiment.measure_fit("circles", np.random.default_rng(2).normal(
        0, 0.3, (4000, 2)), ref)
    assert blob["off_support"] > 0.3


def test_density_matching_gives_the_nf_the_cnfs_wall_time(tmp_path):
    summary = cnf_experiment.main([
        "--skip", "ml", "--targets", "U1", "--sizes", "2", "--cnf-iters", "3",
        "--nf-iters", "100000", "--nf-budget", "cnf-time", "--batch", "16",
        "--eval-samples", "64", "--tol", "1e-3", "--out", str(tmp_path)])
    cnf, nf = summary["density_matching"]
    assert (cnf["model"], nf["model"]) == ("cnf", "nf") and cnf["iterations"] == 3
    assert 3 < nf["iterations"] < 100000
    assert cnf["train_s"] <= nf["train_s"] < cnf["train_s"] + 1.0
    (claim,) = summary["density_claims"]
    assert claim["cnf_minus_nf"] == pytest.approx(cnf["kl_loss"] - nf["kl_loss"])
    assert claim["verdict"] in ("CNF lower", "NF lower", "tie")
    assert (tmp_path / "density_claims.md").exists()
    # U1 is normalisable: the loss plus log Z is a KL divergence, never negative.
    for row in (cnf, nf):
        assert row["kl_nats"] == pytest.approx(row["kl_loss"] + cnf_experiment.log_partition("U1"))
        assert row["kl_nats"] > -3 * row["kl_se"]
        assert 0.0 <= row["outside_window"] <= 1.0
    assert claim["normalisable"]
    # Resumed, the spent budget trains nothing more.
    again = cnf_experiment.main([
        "--skip", "ml", "--targets", "U1", "--sizes", "2", "--cnf-iters", "3",
        "--nf-iters", "100000", "--nf-budget", "cnf-time", "--batch", "16",
        "--eval-samples", "64", "--tol", "1e-3", "--out", str(tmp_path), "--resume"])
    assert again["density_matching"][1]["iterations"] == nf["iterations"]
    with pytest.raises(SystemExit):
        cnf_experiment.main(["--targets", "U7", "--out", str(tmp_path)])


def test_log_partition_of_u1_matches_adaptive_quadrature_and_u2_u3_have_none():
    from scipy import integrate

    def p(y, x):  # exp(-U1), written out in NumPy
        r = math.hypot(x, y)
        return math.exp(-0.5 * ((r - 2.0) / 0.4) ** 2) * (
            math.exp(-0.5 * ((x - 2.0) / 0.6) ** 2) + math.exp(-0.5 * ((x + 2.0) / 0.6) ** 2))

    z, _ = integrate.dblquad(p, -5, 5, -5, 5, epsabs=1e-10, epsrel=1e-10)
    assert cnf_experiment.log_partition("U1") == pytest.approx(math.log(z), abs=1e-6)
    # exp(-U) of U2 and U3 is constant along z1: no normaliser, the loss has no floor.
    assert cnf_experiment.log_partition("U2") is None
    assert cnf_experiment.log_partition("U3") is None
    # Confined to |z1| <= 4 they are: in closed form, the Gaussian ridge(s) along z2 times
    # the window's length plus the two half-Gaussian walls of std 0.2 beyond it.
    length = 8.0 + 2 * 0.2 * math.sqrt(math.pi / 2)
    u2 = 0.4 * math.sqrt(2 * math.pi) * length
    assert cnf_experiment.log_partition("U2c") == pytest.approx(math.log(u2), abs=1e-6)
    u3 = 2 * 0.35 * math.sqrt(2 * math.pi) * length
    assert cnf_experiment.log_partition("U3c") == pytest.approx(math.log(u3), abs=1e-6)
    # Inside the window the confined energies are the originals.
    z = tf.constant(np.random.default_rng(3).uniform(-4, 4, (50, 2)))
    for name in ("U2", "U3"):
        np.testing.assert_array_equal(energy(name + "c", z), energy(name, z))


def test_density_claims_call_a_winner_only_beyond_twice_the_standard_error():
    rows = [{"target": "U1", "model": m, "size": 2, "kl_loss": kl, "kl_se": 0.01,
             "iterations": 1, "train_s": 1.0} for m, kl in (("cnf", -1.0), ("nf", -0.9))]
    rows += [{"target": "U2", "model": m, "size": 2, "kl_loss": kl, "kl_se": 0.01,
              "iterations": 1, "train_s": 1.0} for m, kl in (("cnf", -1.0), ("nf", -0.99))]
    rows += [{"target": "U3", "model": m, "size": 8, "kl_loss": kl, "kl_se": 0.001,
              "iterations": 1, "train_s": 1.0} for m, kl in (("cnf", -1.0), ("nf", -1.1))]
    got = {c["target"]: c for c in cnf_experiment.density_claims(rows)}
    assert got["U1"]["verdict"] == "CNF lower"  # 0.1 apart, 2 se = 0.028
    assert got["U2"]["verdict"] == "tie"  # 0.01 apart
    assert got["U3"]["verdict"] == "NF lower"
    assert got["U1"]["se"] == pytest.approx(0.01 * math.sqrt(2))


def test_hypernetwork_starts_as_the_reference_example_with_a_moving_flow_at_t0():
    import keras

    keras.utils.set_random_seed(0)
    dyn = HyperPlanarDynamics(2, 64, hidden=32, dtype="float64")
    dyn.build()
    for layer, fan_in in ((dyn.h1, 1), (dyn.h2, 32), (dyn.h3, 32)):
        for v in (layer.kernel, layer.bias):  # uniform in +-1/sqrt(fan_in), biases too
            a = np.abs(v.numpy())
            assert a.max() <= fan_in ** -0.5 and a.max() > 0.9 * fan_in ** -0.5
    z = tf.constant(np.random.default_rng(0).normal(size=(16, 2)))
    # With zero biases the hypernetwork's output, hence the flow, vanished at t = 0.
    assert float(tf.norm(dyn(tf.constant(0.0, F64), z))) > 1e-2


def test_the_cnf_trains_on_the_in_graph_fast_path_with_the_adjoints_gradient():
    """The CNF on ``tf_dopri5`` (backpropagated through its steps, exact trace inside the
    loop) gives the log-density and the gradient of the adjoint through SciPy's DOPRI5."""
    adjoint = small_cnf()
    fast = CNF(adjoint.dynamics, t0=0.0, t1=1.0, method="tf_dopri5", rtol=1e-10,
               atol=1e-10, dtype="float64")
    x = tf.constant(X, F64)
    results = []
    for cnf in (adjoint, fast):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(cnf.log_prob(x))
        grads = tape.gradient(loss, adjoint.dynamics.trainable_variables)
        results.append((loss.numpy(), [g.numpy() for g in grads]))
    (la, ga), (lf, gf) = results
    np.testing.assert_allclose(lf, la, rtol=1e-8)
    for a, f in zip(ga, gf):
        np.testing.assert_allclose(f, a, rtol=1e-6, atol=1e-9 * np.max(np.abs(a)))
