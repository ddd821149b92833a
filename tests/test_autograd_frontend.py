"""The autograd frontend against autograd's own scipy odeint (the paper's adjoint)."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.builtins import tuple as ag_tuple
from autograd.scipy.integrate import odeint as autograd_odeint
from problems import BY_NAME

from solvers_bridge import autograd_ode

RNG = np.random.default_rng(0)
W1, B1 = RNG.normal(0, 0.5, (2, 16)), RNG.normal(0, 0.1, 16)
W2, B2 = RNG.normal(0, 0.5, (16, 2)), np.zeros(2)
Y0 = np.array([[2.0, 0.0], [0.5, -1.0]])
T = np.array([0.0, 0.5, 1.0, 1.5])


def mlp(y, params):
    w1, b1, w2, b2 = params
    return anp.dot(anp.tanh(anp.dot(y ** 3, w1) + b1), w2) + b2


def test_gradients_match_autograd_scipy_odeint():
    params = (W1, B1, W2, B2)

    def loss_ours(y0, params):
        ys = autograd_ode.odeint(lambda t, y, p: mlp(y, p), y0, T, params, method="odeint",
                                 rtol=1e-10, atol=1e-10)
        return anp.sum(ys ** 2)

    def loss_ref(y0_flat, params):
        def f(y, t, *p):
            return anp.reshape(mlp(anp.reshape(y, Y0.shape), p), (-1,))

        ys = autograd_odeint(f, y0_flat, T, ag_tuple(params), rtol=1e-10, atol=1e-10)
        return anp.sum(ys ** 2)

    g_ours = grad(loss_ours, argnum=(0, 1))(Y0, params)
    g_ref = grad(loss_ref, argnum=(0, 1))(Y0.ravel(), params)
    np.testing.assert_allclose(g_ours[0].ravel(), g_ref[0], rtol=1e-6)
    for a, b in zip(g_ours[1], g_ref[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert autograd_ode.last_info["backward"].nfev > 0


@pytest.mark.parametrize("method", ["adams", "lsoda", "dopri5"])
def test_gradient_wrt_times_matches_closed_form(method):
    p = BY_NAME["time_dependent"]
    w = np.random.default_rng(7).normal(size=(T.size, 2))

    def loss(y0, k, t):
        ys = autograd_ode.odeint(lambda s, y, q: q[0] * anp.cos(q[1] * s) * y,
                                 y0, t, k, method=method, rtol=1e-10, atol=1e-12)
        return anp.sum(w * ys)

    gy0, gp, gt = grad(loss, argnum=(0, 1, 2))(p.y0, p.params, T)
    ey0, ep, et = p.loss_grads(T, w)
    np.testing.assert_allclose(gy0, ey0, rtol=1e-6)
    np.testing.assert_allclose(gp, ep, rtol=1e-6)
    np.testing.assert_allclose(gt, et, rtol=1e-6, atol=1e-8)
