"""The autograd frontend: ``odeint`` as an autograd primitive, as in the paper's code.

The dynamics are written in ``autograd.numpy`` as ``func(t, y, params)``; the
forward pass runs :func:`solvers_bridge.solve` and the gradient runs
:func:`solvers_bridge.adjoint` with vector-Jacobian products from autograd. Unlike
``autograd.scipy.integrate.odeint``, any registered method can be used and the
solver statistics are kept.

Example::

    import autograd.numpy as anp
    from autograd import grad
    from solvers_bridge.autograd_ode import odeint

    f = lambda t, y, k: -k * y
    loss = lambda k: anp.sum(odeint(f, anp.ones(2), anp.array([0.0, 1.0]), k) ** 2)
    grad(loss)(0.5)
"""

from __future__ import annotations

from collections.abc import Callable

import autograd.numpy as anp
import numpy as np
from autograd import make_vjp
from autograd.builtins import tuple as ag_tuple
from autograd.extend import defvjp_argnums, primitive
from autograd.misc import flatten

from solvers_bridge._adjoint import adjoint, default_adjoint_method
from solvers_bridge._info import SolveInfo
from solvers_bridge._solve import DEFAULT_ATOL, DEFAULT_RTOL, solve

#: Statistics of the most recent forward and backward pass (for inspection).
last_info: dict[str, SolveInfo | None] = {"forward": None, "backward": None}


def odeint(func: Callable, y0, t, params=(), *, method: str = "lsoda", rtol=DEFAULT_RTOL,
           atol=DEFAULT_ATOL, adjoint_method: str | None = None, adjoint_rtol=None,
           adjoint_atol=None, restart: bool = True, seminorm: bool = False, **options):
    """Differentiable ODE solve for autograd.

    Args:
        func: ``func(t, y, params) -> dy/dt`` in ``autograd.numpy``; ``y`` has the
            shape of ``y0``.
        y0: Initial state (any shape).
        t: Output times, strictly monotonic.
        params: Any autograd container of arrays (flattened internally).
        method, rtol, atol, **options: As for :func:`solvers_bridge.solve`.
        adjoint_method, adjoint_rtol, adjoint_atol, restart, seminorm: As for
            :func:`solvers_bridge.adjoint`; the defaults are the forward values and
            :func:`~solvers_bridge.default_adjoint_method`.

    Returns:
        The states at ``t``, shape ``(len(t), *y0.shape)``.
    """
    flat_params, unflatten = flatten(params)
    config = dict(func=func, unflatten=unflatten, shape=np.shape(y0), method=method,
                  rtol=rtol, atol=atol, adjoint_method=adjoint_method,
                  adjoint_rtol=rtol if adjoint_rtol is None else adjoint_rtol,
                  adjoint_atol=atol if adjoint_atol is None else adjoint_atol,
                  restart=restart, seminorm=seminorm, options=options)
    ys = _odeint_flat(anp.reshape(y0, (-1,)), t, flat_params, ag_tuple((config,)))
    return anp.reshape(ys, (-1,) + tuple(np.shape(y0)))


def _flat_func(config):
    func, unflatten, shape = config["func"], config["unflatten"], config["shape"]

    def f(t, y_flat, p_flat):
        return anp.reshape(func(t, anp.reshape(y_flat, shape), unflatten(p_flat)), (-1,))

    return f


@primitive
def _odeint_flat(y0, t, flat_params, config_box):
    config = config_box[0]
    f = _flat_func(config)
    p = np.asarray(flat_params, dtype=np.float64)
    ys, info = solve(lambda s, y: f(s, y, p), y0, t, config["method"], config["rtol"],
                     config["atol"], **config["options"])
    last_info["forward"] = info
    return ys


def _grad_all(ys, y0, t, flat_params, config_box):
    config = config_box[0]
    f = _flat_func(config)
    p = np.asarray(flat_params, dtype=np.float64)
    n, n_params = ys.shape[1], p.size
    vjp_all = make_vjp(lambda s, y, q: f(s, y, q), argnum=(0, 1, 2))

    def vjp(s, y, a):
        vjp_fn, fval = vjp_all(s, y, p)
        g_t, g_y, g_p = vjp_fn(a)
        return np.concatenate([fval, g_y, np.atleast_1d(g_t), np.ravel(g_p)])

    method = config["adjoint_method"] or default_adjoint_method(config["method"],
                                                                 2 * n + 1 + n_params)
    tv = np.asarray(t, dtype=np.float64)

    def backward(g):
        result = adjoint(vjp, tv, ys, np.reshape(g, ys.shape), n_params, method=method,
                         rtol=config["adjoint_rtol"], atol=config["adjoint_atol"],
                         restart=config["restart"], seminorm=config["seminorm"],
                         fun=lambda s, y: f(s, y, p), **config["options"])
        last_info["backward"] = result.info
        return result

    return backward


def _vjp_argnums(argnums, ans, args, kwargs):
    backward = _grad_all(ans, *args)

    def vjp(g):
        result = backward(g)
        parts = {0: result.grad_y0, 1: result.grad_t, 2: result.grad_params}
        return tuple(parts[i] for i in argnums)

    return vjp


defvjp_argnums(_odeint_flat, _vjp_argnums)
