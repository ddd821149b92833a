"""``tfode.odeint``: the central op.

The forward pass hands the state to a SciPy solver through the framework-free
bridge (one ``tf.numpy_function`` in graph mode, a direct call eagerly); the
gradient integrates the paper's augmented adjoint ODE backward through the same
solvers. No tape is kept over the solve: memory does not grow with the number of
steps. The fixed-step methods ``euler``, ``midpoint`` and ``rk4`` instead run
in-graph and backpropagate through their operations (the RK-Net baseline).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as _record

import solvers_bridge as sb
from tfode._compile import compile_dynamics, tracing_integrators
from tfode._fixed import FIXED_OPTIONS, TABLEAUX, fixed_odeint, steps_per_interval
from tfode._stats import SolveStats, info_vector

_F64 = tf.float64
#: The adjoints ``odeint`` offers (see its docstring).
ADJOINTS = ("backsolve", "quadrature", "interpolating", "checkpointed")
#: Options handled by tfode itself rather than by the bridge.
_TFODE_OPTIONS = frozenset({"jacobian"})


def methods() -> list[str]:
    """All method names ``odeint`` accepts: the SciPy ones and the fixed-step ones."""
    return sorted(sb.METHODS) + sorted(TABLEAUX)


@tf.autograph.experimental.do_not_convert
def odeint(func: Callable, y0, t, *, method: str = "lsoda", rtol=sb.DEFAULT_RTOL,
           atol=sb.DEFAULT_ATOL, options: dict | None = None,
           adjoint_method: str | None = None, adjoint_rtol=None, adjoint_atol=None,
           adjoint_options: dict | None = None, restart: bool = True,
           seminorm: bool = False, adjoint: str = "backsolve", variables=None,
           stats: SolveStats | None = None, jit_compile="auto",
           name: str | None = None) -> tf.Tensor:
    """Solves ``dy/dt = func(t, y)`` and returns ``y`` at every time in ``t``, differentiably.

    Args:
        func: ``func(t, y) -> dy/dt`` built from TensorFlow ops: a Keras layer or
            model, a ``tf.Module`` or any callable. Every trainable variable it reads
            (through attributes or closures) is found by tracing it once and gets a
            gradient.
        y0: Initial state at ``t[0]``, any shape, float32 or float64. The dynamics
            are evaluated in this dtype; the solver state is always float64.
        t: 1-D output times, strictly increasing or decreasing.
        method: A SciPy method: ``lsoda`` (default), ``adams`` (VODE implicit Adams,
            the paper's), ``bdf``, ``odeint``, ``dopri5``, ``dop853``; or a
            fixed-step in-graph method: ``euler``, ``midpoint``, ``rk4``.
        rtol: Relative tolerance (SciPy methods).
        atol: Absolute tolerance (SciPy methods).
        options: Solver options: for the SciPy methods those of
            :func:`solvers_bridge.solve` (``max_steps``, ``first_step``,
            ``max_step``, ``min_step``, ``max_fd_jacobian_size``, ...) plus
            ``jacobian="autodiff"`` (``lsoda``, ``bdf``, ``odeint``: hand the solver
            the dense Jacobian computed by TensorFlow) or ``jacobian="banded"`` (for
            a batch of independent samples along the state's first axis: one batch
            Jacobian gives the ``d x d`` blocks, handed over as a band of width
            ``d - 1`` or a sparse matrix, never a dense ``n x n``); for the
            fixed-step methods ``step_size`` or ``num_steps`` (steps per output
            interval, default 1).
        adjoint_method: Method of the backward pass; default
            :func:`solvers_bridge.default_adjoint_method` (the forward method, or
            ``adams`` where that would form a dense finite-difference Jacobian on a
            large augmented state).
        adjoint_rtol: Backward relative tolerance (default: ``rtol``).
        adjoint_atol: Backward absolute tolerance (default: ``atol``).
        adjoint_options: Backward solver options (default: the forward ``options``
            that are not specific to the forward state).
        restart: Reset the state to the stored forward value at each output time on
            the way back (Appendix D); ``False`` is pure Algorithm 1.
        seminorm: Leave the parameter and time gradients out of the backward
            error control.
        adjoint: ``"backsolve"`` (default, the paper's: integrates ``y`` back with
            the adjoint, O(1) memory, unstable on stiff dynamics); or one of the
            dense adjoints, which need a ``solve_ivp`` method (``bdf``, ``lsoda``,
            ``radau``, ``rk45``, ``dop853``) or VODE ``adams`` (steps recorded and
            Hermite-interpolated) and give right gradients through stiff
            dynamics: ``"quadrature"`` keeps the dense forward solution, integrates
            only the adjoint backward with the same kind of solver and gets the
            parameter gradients by Gauss quadrature (memory O(steps));
            ``"interpolating"`` integrates ``[a, dL/dtheta]`` backward against the
            dense solution (stiff methods then form finite-difference Jacobians of
            that system: for few parameters); ``"checkpointed"`` keeps only the
            states at the output times plus ``options["checkpoints"]`` equally
            spaced times and re-solves each interval forward before its quadrature
            backward (memory O(checkpoints)). Their options are ``max_step``,
            ``jacobian="autodiff"`` or ``"banded"`` (used forward and, transposed,
            backward), ``nodes`` (Gauss nodes per backward step, default 4) and
            ``checkpoints``; ``adjoint_method`` defaults to ``method``.
        variables: The variables to differentiate; default: every trainable
            variable ``func`` reads. A read variable missing from this list warns.
        stats: A :class:`SolveStats` to receive the forward and backward statistics.
        jit_compile: ``"auto"`` (default: XLA-compile the dynamics callbacks when
            possible), ``True`` (warn if XLA cannot) or ``False``.
        name: Name scope.

    Returns:
        A tensor of shape ``[len(t), *y0.shape]`` and the dtype of ``y0``.

    Raises:
        ValueError, TypeError: bad input, naming the problem and the fix.
        solvers_bridge.SolverError: the solver failed (eagerly; in graph mode TF
            re-raises it as a ``tf.errors`` exception with the same message).
        solvers_bridge.NestedSolveError: ``func`` itself calls ``odeint`` with the
            same non-reentrant integrator.
    """
    with tf.name_scope(name or "odeint"):
        if adjoint not in ADJOINTS:
            raise ValueError(f"adjoint must be one of {', '.join(ADJOINTS)}; got {adjoint!r}.")
        if adjoint != "backsolve":
            if method not in sb.DENSE_METHODS:
                raise ValueError(
                    f"adjoint={adjoint!r} needs a method with a dense output; got "
                    f"{method!r}. Choose one of {', '.join(sorted(sb.DENSE_METHODS))}.")
        elif method not in sb.METHODS and method not in TABLEAUX:
            raise ValueError(f"Unknown method {method!r}. Valid methods are: "
                             f"{', '.join(methods())}.")
        y0 = tf.convert_to_tensor(y0)
        if not y0.dtype.is_floating or y0.dtype not in (tf.float32, tf.float64):
            raise TypeError(
                f"y0 has dtype {y0.dtype.name}; tfode integrates float32 or float64 states "
                "(16-bit dynamics make the solvers stall). Cast y0, and pin the dynamics' "
                "layers to float32 or wider under mixed precision.")
        t = tf.convert_to_tensor(t)
        if t.shape.rank != 1 or t.shape[0] == 0:
            raise ValueError(f"t must be a non-empty 1-D tensor of times; got shape {t.shape}.")
        if not t.dtype.is_floating and not t.dtype.is_integer:
            raise TypeError(f"t must be real; got dtype {t.dtype.name}.")
        t_static = tf.get_static_value(t)
        if t_static is not None:
            sb.check_times(t_static)
        options = dict(options or {})
        if method in TABLEAUX:
            return _fixed(func, y0, t, method, options, stats)
        return _adaptive(func, y0, t, method, rtol, atol, options, adjoint_method,
                         adjoint_rtol, adjoint_atol, adjoint_options, restart, seminorm,
                         variables, stats, jit_compile, adjoint)


def _fixed(func, y0, t, method, options, stats):
    unknown = sorted(set(options) - FIXED_OPTIONS)
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown} for fixed-step method '{method}'. "
                        f"Its options are {sorted(FIXED_OPTIONS)}.")
    if t.shape[0] is None:
        raise ValueError("Fixed-step methods need the number of output times when the graph "
                         "is built; t has an unknown length.")
    counts = steps_per_interval(t, **options)
    ys, nfev = fixed_odeint(func, y0, t, method, counts)
    if stats is None:
        return ys
    vector = [nfev, 0, sum(counts), 0, 0]
    with tf.control_dependencies(stats.record("forward", vector)):
        ys = tf.identity(ys)

    @tf.custom_gradient
    def mark_backward(x):
        # Backpropagation through the steps takes one VJP per forward evaluation:
        # recorded when (and only when) the gradient is computed.
        def grad(dy):
            with tf.control_dependencies(stats.record("backward", vector)):
                return tf.identity(dy)

        return tf.identity(x), grad

    return mark_backward(ys)


class _Solver:
    """Everything one adaptive ``odeint`` call needs on the NumPy side."""

    #: How many dense forward solutions the quadrature adjoint keeps for pending
    #: backward passes (forward-only calls would otherwise accumulate them).
    KEEP_DENSE = 16

    def __init__(self, compiled, method, rtol, atol, options, adjoint_method, adjoint_rtol,
                 adjoint_atol, adjoint_options, restart, seminorm, stats, adjoint="backsolve"):
        self.compiled = compiled
        self.method, self.rtol, self.atol = method, rtol, atol
        self.jacobian = options.pop("jacobian", None)
        if self.jacobian not in (None, "autodiff", "banded"):
            raise ValueError(f"options['jacobian'] must be 'autodiff', 'banded' or absent; "
                             f"got {self.jacobian!r}.")
        self.adjoint = adjoint
        if adjoint != "backsolve":
            self._init_quadrature(options, adjoint_method, adjoint_rtol, adjoint_atol,
                                  adjoint_options, stats)
            return
        if self.jacobian and not sb.get_method(method).jacobian:
            raise ValueError(f"jacobian={self.jacobian!r} needs a method that uses a "
                             f"Jacobian (lsoda, bdf, odeint); got {method!r}.")
        if self.jacobian == "banded" and ("lband" in options or "uband" in options):
            raise ValueError("jacobian='banded' sets lband = uband = d - 1 (d the size of "
                             "one sample) itself; do not pass lband or uband with it.")
        self.options = options
        self.adjoint_method = adjoint_method
        self.adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
        self.adjoint_atol = atol if adjoint_atol is None else adjoint_atol
        if adjoint_options is None:
            adjoint_options = {k: v for k, v in options.items() if k not in ("lband", "uband")}
        self.adjoint_options = dict(adjoint_options)
        self.restart, self.seminorm, self.stats = restart, seminorm, stats
        self.n_params = int(sum(int(np.prod(v.shape)) for v in compiled.variables))
        # Validate option names now rather than inside the graph.
        sb.get_method(method)(1e-6, 1e-6, None, **options)
        if adjoint_method is not None:
            sb.get_method(adjoint_method)(1e-6, 1e-6, None, **self.adjoint_options)

    def _init_quadrature(self, options, adjoint_method, adjoint_rtol, adjoint_atol,
                         adjoint_options, stats):
        allowed = {"max_step", "nodes", "checkpoints"}
        for label, opts in (("options", options), ("adjoint_options", adjoint_options or {})):
            unknown = sorted(set(opts) - allowed)
            if unknown:
                raise TypeError(f"Unknown {label} {unknown} for adjoint={self.adjoint!r}; its "
                                f"options are {sorted(allowed | {'jacobian'})}.")
        self.options = dict(options)
        self.nodes = int(self.options.pop("nodes", 4))
        self.checkpoints = int(self.options.pop("checkpoints", 0))
        if self.nodes < 1 or self.checkpoints < 0:
            raise ValueError(f"options['nodes'] must be a positive integer and "
                             f"options['checkpoints'] a non-negative one; got {self.nodes} "
                             f"and {self.checkpoints}.")
        self.adjoint_method = adjoint_method or self.method
        if self.adjoint_method not in sb.DENSE_METHODS:
            raise ValueError(f"adjoint_method {self.adjoint_method!r} has no dense output; "
                             f"choose one of {', '.join(sorted(sb.DENSE_METHODS))}.")
        self.adjoint_rtol = self.rtol if adjoint_rtol is None else adjoint_rtol
        self.adjoint_atol = self.atol if adjoint_atol is None else adjoint_atol
        self.adjoint_options = dict(adjoint_options or {})
        self.adjoint_options.setdefault("max_step", self.options.get("max_step"))
        self.stats = stats
        self.n_params = int(sum(int(np.prod(v.shape)) for v in self.compiled.variables))
        self._dense: dict[int, tuple] = {}  # token -> (solution, grid, index)
        self._token = 0

    def _jacobians(self, cb):
        """``(jac, jac_blocks, extra options)`` for the solver from the option."""
        if self.jacobian == "autodiff":
            return cb.jac, None, {}
        if self.jacobian != "banded":
            return None, None, {}
        blocks = cb.block_jac
        if self.adjoint != "backsolve":
            return None, blocks, {}
        layout = sb.block_layout(blocks)  # from the blocks' shape, cached
        return ((lambda s, y: layout.banded(blocks(s, y))), None,
                {"lband": layout.bandwidth, "uband": layout.bandwidth})

    def forward(self, y0, t, shape):
        cb = self.compiled.callbacks(shape)
        jac, jac_blocks, extra = self._jacobians(cb)
        token = 0
        with _record.stop_recording():
            if self.adjoint != "backsolve":
                grid, index = (sb.checkpoint_grid(t, self.checkpoints)
                               if self.adjoint == "checkpointed" else (t, None))
                dense = sb.dense_solve(cb.fun, y0, grid, self.method, self.rtol, self.atol,
                                       jac=jac, jac_blocks=jac_blocks,
                                       max_step=self.options.get("max_step"))
                info = dense.info
                ys = dense.ys if index is None else dense.ys[index]
                if index is not None:  # keep the checkpoints only, not the dense solution
                    dense = sb.DenseSolution(dense.ys, None, info)
                self._token += 1
                token = self._token
                self._dense[token] = (dense, grid, index)
                while len(self._dense) > self.KEEP_DENSE:  # oldest first
                    del self._dense[next(iter(self._dense))]
            else:
                ys, info = sb.solve(cb.fun, y0, t, self.method, self.rtol, self.atol, jac=jac,
                                    **self.options, **extra)
        if self.stats is not None:
            self.stats.forward_info = info
        return ys, np.asarray(info_vector(info), dtype=np.int64), np.int64(token)

    def backward(self, ys, dys, t, shape, token=0):
        if self.adjoint != "backsolve":
            return self._backward_dense(dys, t, shape, int(token))
        cb = self.compiled.callbacks(shape)
        n = ys.shape[1]
        method = self.adjoint_method or sb.default_adjoint_method(
            self.method, 2 * n + 1 + self.n_params,
            self.adjoint_options.get("max_fd_jacobian_size", sb.DEFAULT_MAX_FD_JACOBIAN_SIZE))
        with _record.stop_recording():
            res = sb.adjoint(cb.vjp, t, ys, dys, self.n_params, method=method,
                             rtol=self.adjoint_rtol, atol=self.adjoint_atol,
                             restart=self.restart, seminorm=self.seminorm, fun=cb.fun,
                             **self.adjoint_options)
        return self._gradients(res)

    def _backward_dense(self, dys, t, shape, token):
        held = self._dense.pop(token, None)
        if held is None:
            raise RuntimeError(
                f"The forward solution this gradient needs is no longer held: the "
                f"{self.adjoint} adjoint keeps the last {self.KEEP_DENSE} forward solves of "
                "an odeint call site. Compute gradients soon after the forward pass.")
        dense, grid, index = held
        cb = self.compiled.callbacks(shape)
        jac, jac_blocks, _ = self._jacobians(cb)
        common = dict(method=self.adjoint_method, rtol=self.adjoint_rtol,
                      atol=self.adjoint_atol, max_step=self.adjoint_options.get("max_step"))
        with _record.stop_recording():
            if self.adjoint == "quadrature":
                res = sb.quadrature_adjoint(cb.vjp, t, dense, dys, self.n_params, jac=jac,
                                            jac_blocks=jac_blocks, fun=cb.fun,
                                            nodes=self.nodes, **common)
            elif self.adjoint == "interpolating":
                res = sb.interpolating_adjoint(cb.vjp, t, dense, dys, self.n_params,
                                               fun=cb.fun, **common)
            else:
                grad_grid = np.zeros_like(dense.ys)
                grad_grid[index] = dys
                res = sb.checkpointed_adjoint(
                    cb.fun, cb.vjp, grid, dense.ys, grad_grid, self.n_params, jac=jac,
                    jac_blocks=jac_blocks, nodes=self.nodes, forward_rtol=self.rtol,
                    forward_atol=self.atol, **common)
                res.grad_t = res.grad_t[index]
        return self._gradients(res)

    def _gradients(self, res):
        if self.stats is not None:
            self.stats.backward_info = res.info
        return (res.grad_y0, res.grad_t, res.grad_params,
                np.asarray(info_vector(res.info), dtype=np.int64))


def _adaptive(func, y0, t, method, rtol, atol, options, adjoint_method, adjoint_rtol,
              adjoint_atol, adjoint_options, restart, seminorm, variables, stats, jit_compile,
              adjoint="backsolve"):
    # solve_ivp's methods are pure Python and reentrant; ODEPACK and VODE are not.
    integrator = sb.get_method(method).integrator if method in sb.METHODS else "solve_ivp"
    if adjoint != "backsolve":
        integrator = "solve_ivp"
    if integrator != "solve_ivp" and integrator in tracing_integrators():
        raise sb.NestedSolveError(
            f"odeint(method={method!r}) is called inside dynamics that are themselves being "
            f"integrated with the same integrator ({integrator}), which is not reentrant. "
            "Use a different method for the inner solve (e.g. 'dopri5' inside 'lsoda').",
            method=method)
    for tol, label in ((rtol, "rtol"), (atol, "atol")):
        arr = np.asarray(tol, dtype=np.float64)
        if not (np.isfinite(arr).all() and (arr >= 0).all()):
            raise ValueError(f"{label} must be non-negative and finite; got {tol!r}.")
    if y0.dtype == tf.float32 and float(np.min(rtol)) < 1e-5:
        warnings.warn(
            f"float32 dynamics with rtol={float(np.min(rtol)):g}: below about 1e-5 LSODA and "
            "VODE stall on float32 round-off. Use float64 states for tight tolerances.",
            stacklevel=3)
    compiled = compile_dynamics(func, y0.dtype, y0.shape, integrator, variables, jit_compile)
    solver = _Solver(compiled, method, rtol, atol, options, adjoint_method, adjoint_rtol,
                     adjoint_atol, adjoint_options, restart, seminorm, stats, adjoint)
    params = [tf.convert_to_tensor(v) for v in compiled.variables]
    y0_flat = tf.reshape(tf.cast(y0, _F64), [-1])
    t64 = tf.cast(t, _F64)
    shape = tf.shape(y0)
    eager = tf.executing_eagerly()
    n_static = y0.shape.num_elements()

    if eager:
        ys_np, fstats, token = solver.forward(y0_flat.numpy(), t64.numpy(), y0.shape)
        ys_flat = tf.constant(ys_np)
    else:
        ys_flat, fstats, token = tf.numpy_function(solver.forward, [y0_flat, t64, shape],
                                                   [_F64, tf.int64, tf.int64], stateful=True,
                                                   name="solve")
        ys_flat.set_shape([t.shape[0], n_static])
    if stats is not None:
        with tf.control_dependencies(stats.record("forward", fstats)):
            ys_flat = tf.identity(ys_flat)

    @tf.custom_gradient
    def attach_adjoint(y0_in, t_in, *param_in):
        def grad(dys):
            dys = tf.cast(tf.convert_to_tensor(dys), _F64)
            if tf.executing_eagerly():
                gy0, gt, gp, bstats = solver.backward(ys_flat.numpy(), dys.numpy(),
                                                      t_in.numpy(), y0.shape, token)
                gy0, gt, gp = tf.constant(gy0), tf.constant(gt), tf.constant(gp)
            else:
                gy0, gt, gp, bstats = tf.numpy_function(
                    solver.backward, [ys_flat, dys, t_in, shape, token],
                    [_F64, _F64, _F64, tf.int64], stateful=True, name="adjoint")
            deps = stats.record("backward", bstats) if stats is not None else []
            with tf.control_dependencies(deps):
                gy0 = tf.identity(gy0)
            sizes = [int(np.prod(p.shape)) for p in param_in]
            parts = tf.split(gp, sizes) if sizes else []
            gparams = [tf.cast(tf.reshape(g, p.shape), p.dtype) for g, p in zip(parts, param_in)]
            return [gy0, tf.reshape(gt, tf.shape(t_in))] + gparams

        return tf.identity(ys_flat), grad

    ys = attach_adjoint(y0_flat, t64, *params)
    out_shape = tf.concat([tf.shape(t)[:1], shape], 0)
    ys = tf.cast(tf.reshape(ys, out_shape), y0.dtype)
    ys.set_shape(tf.TensorShape([t.shape[0]]).concatenate(y0.shape))
    return ys
