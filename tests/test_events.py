"""Event times and their gradients (implicit function theorem) against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

import tfode

TOL = 1e-10


def test_exponential_crossing_a_level():
    # y' = -k y from y0; event y = c: t* = log(y0 / c) / k.
    k = tf.Variable(1.7, dtype=tf.float64)
    c = tf.Variable(0.3, dtype=tf.float64)
    y0 = tf.constant([2.0], tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(y0)
        t_star, y_star = tfode.odeint_event(lambda t, y: -k * y, y0, 0.0,
                                            lambda t, y: y[0] - c, t_max=10.0,
                                            rtol=TOL, atol=TOL)
    assert float(t_star) == pytest.approx(math.log(2.0 / 0.3) / 1.7, rel=1e-8)
    assert float(y_star[0]) == pytest.approx(0.3, rel=1e-8)
    g_y0, g_k, g_c = tape.gradient(t_star, [y0, k, c])
    assert float(g_y0[0]) == pytest.approx(1 / (1.7 * 2.0), rel=1e-6)
    assert float(g_k) == pytest.approx(-math.log(2.0 / 0.3) / 1.7 ** 2, rel=1e-6)
    assert float(g_c) == pytest.approx(-1 / (1.7 * 0.3), rel=1e-6)
    # y(t*) = c whatever the parameters: its gradients vanish except through c.
    g_y0, g_k, g_c = tape.gradient(y_star, [y0, k, c])
    assert abs(float(g_y0[0])) < 1e-7 and abs(float(g_k)) < 1e-7
    assert float(g_c) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("method,adjoint", [("lsoda", "backsolve"), ("dop853", "backsolve"),
                                            ("radau", "quadrature")])
def test_falling_ball_time_and_speed_at_impact(method, adjoint):
    # h' = v, v' = -g from (h0, v0); impact h = 0 falling: t* = (v0 + sqrt(v0^2 + 2 g h0)) / g.
    g = tf.Variable(9.81, dtype=tf.float64)
    state0 = tf.constant([10.0, 2.0], tf.float64)

    def dynamics(t, s):
        return tf.stack([s[1], -g])

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(state0)
        t_star, s_star = tfode.odeint_event(dynamics, state0, 0.0, lambda t, s: s[0],
                                            t_max=5.0, direction=-1.0, method=method,
                                            rtol=TOL, atol=TOL, adjoint=adjoint)
        loss = t_star + 0.1 * s_star[1] ** 2
    # The closed form, differentiated by TensorFlow.
    with tf.GradientTape() as ref_tape:
        ref_tape.watch(state0)
        h0, v0 = state0[0], state0[1]
        t_ref = (v0 + tf.sqrt(v0 ** 2 + 2 * g * h0)) / g
        v_ref = v0 - g * t_ref
        loss_ref = t_ref + 0.1 * v_ref ** 2
    want = ref_tape.gradient(loss_ref, [state0, g])
    assert float(t_star) == pytest.approx(float(t_ref), rel=1e-8)
    assert float(s_star[1]) == pytest.approx(float(v_ref), rel=1e-7)
    got = tape.gradient(loss, [state0, g])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert float(got[1]) == pytest.approx(float(want[1]), rel=1e-6)


def test_event_in_a_tf_function():
    k = tf.Variable(2.0, dtype=tf.float64)

    @tf.function
    def run(y0):
        with tf.GradientTape() as tape:
            t_star, _ = tfode.odeint_event(lambda t, y: -k * y, y0, 0.0,
                                           lambda t, y: y[0] - 0.5, t_max=10.0,
                                           rtol=TOL, atol=TOL)
        return t_star, tape.gradient(t_star, k)

    t_star, g_k = run(tf.constant([1.0], tf.float64))
    assert float(t_star) == pytest.approx(math.log(2.0) / 2.0, rel=1e-8)
    assert float(g_k) == pytest.approx(-math.log(2.0) / 4.0, rel=1e-6)


def test_no_event_is_a_clear_error():
    with pytest.raises(ValueError, match="No event: event_fn did not cross zero"):
        tfode.odeint_event(lambda t, y: -y, tf.constant([1.0], tf.float64), 0.0,
                           lambda t, y: y[0] + 1.0, t_max=3.0)


def test_non_terminal_events_are_every_crossing_each_differentiable():
    # y = sin(w t) (as the first component of a harmonic oscillator) crosses 0.5 upward at
    # t_k = (asin(0.5) + 2 pi k) / w: dt_k/dw = -t_k / w.
    w = tf.Variable(1.3, dtype=tf.float64)
    y0 = tf.constant([0.0, 1.0], tf.float64)

    def oscillator(t, s):
        return tf.stack([w * s[1], -w * s[0]])

    with tf.GradientTape(persistent=True) as tape:
        times, states = tfode.odeint_event(oscillator, y0, 0.0, lambda t, s: s[0] - 0.5,
                                           t_max=12.0, direction=1.0, terminal=False,
                                           rtol=TOL, atol=TOL)
        total = tf.reduce_sum(times)
    want = np.array([(math.asin(0.5) + 2 * math.pi * k) / 1.3 for k in range(3)])
    want = want[want < 12.0]
    np.testing.assert_allclose(times, want, rtol=1e-8)
    np.testing.assert_allclose(states[:, 0], 0.5, rtol=1e-7)
    assert float(tape.gradient(total, w)) == pytest.approx(float(np.sum(-want / 1.3)), rel=1e-6)
    with pytest.raises(NotImplementedError, match="runs eagerly only"):
        tf.function(lambda: tfode.odeint_event(oscillator, y0, 0.0, lambda t, s: s[0],
                                               t_max=3.0, terminal=False))()


# Every method whose operations include events (the in-graph ones solve to output times
# only, and are refused by odeint_event: tests/test_in_graph.py).
@pytest.mark.parametrize("method", sorted(name for name, caps in tfode.methods().items()
                                          if "events" in caps["operations"]))
def test_every_adaptive_method_locates_the_event_with_the_state_on_its_surface(method):
    k = tf.Variable(1.0, dtype=tf.float64)
    y0 = tf.constant([2.0], tf.float64)
    with tf.GradientTape() as tape:
        t_star, y_star = tfode.odeint_event(lambda t, y: -k * y, y0, 0.0,
                                            lambda t, y: y[0] - 1.0, t_max=5.0,
                                            method=method, rtol=TOL, atol=TOL)
    # |g(t*, y*)| <= 1e-8 relative: the state comes from the integrator that located it.
    assert abs(float(y_star[0]) - 1.0) <= 1e-8
    assert float(t_star) == pytest.approx(math.log(2.0), rel=1e-8)
    assert float(tape.gradient(t_star, k)) == pytest.approx(-math.log(2.0), rel=1e-6)
