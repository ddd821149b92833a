"""``tfode.odeint``: the central op.

The forward pass hands the state to a SciPy solver through the framework-free
bridge (one ``tf.numpy_function`` in graph mode, a direct call eagerly); the
gradient is the chosen adjoint's (:mod:`tfode._adjoints`), through the same
registry of methods. What the backward pass needs from the forward pass (nothing,
the dense solution or the checkpoints) is one float64 tensor kept by the custom
gradient like any saved activation. No tape is kept over the solve. The fixed-step
methods ``euler``, ``midpoint`` and ``rk4`` instead run in-graph and backpropagate
through their operations (the RK-Net baseline).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

import solvers_bridge as sb
from tfode import _tf_internals as _tfx
from tfode._adaptive import ADAPTIVE_OPTIONS, PAIRS, adaptive_odeint, raise_if_failed
from tfode._adjoints import Adjoint, SolveSpec, as_adjoint
from tfode._compile import compile_dynamics, tracing_integrators
from tfode._fixed import FIXED_OPTIONS, TABLEAUX, fixed_odeint, steps_per_interval
from tfode._stats import SolveStats, info_vector
from tfode._threads import in_graph_op

_F64 = tf.float64
#: Options handled by tfode itself rather than by the bridge.
_JACOBIANS = (None, "autodiff", "banded")
#: Keyword arguments of earlier releases that now belong to the adjoint object.
_ADJOINT_ARGUMENTS = {"adjoint_method": "method", "adjoint_rtol": "rtol",
                      "adjoint_atol": "atol", "adjoint_options": "options",
                      "restart": "restart", "seminorm": "seminorm"}


def methods() -> dict[str, dict]:
    """Every method ``odeint`` accepts, with what it supports.

    Returns:
        ``{name: capabilities}`` (iterating gives the names): for the SciPy methods
        :meth:`solvers_bridge.Method.capabilities` (integrator, reentrant, stiff,
        Jacobians, vector tolerances, dense output, operations, options); for the
        fixed-step in-graph methods their options and ``"in_graph": True``.
    """
    out = {}
    for name, cls in sorted(sb.METHODS.items()):
        out[name] = dict(cls.capabilities(), in_graph=False)
    for names, options in ((sorted(PAIRS), ADAPTIVE_OPTIONS), (sorted(TABLEAUX), FIXED_OPTIONS)):
        for name in names:
            out[name] = {"name": name, "scipy_call": None, "integrator": None,
                         "reentrant": True, "stiff": False, "multistep": False,
                         "jacobians": [],
                         "fd_jacobian": False, "vector_tolerances": False,
                         "dense_output": None, "operations": ["solve"],
                         "options": sorted(options), "in_graph": True}
    return out


#: Default tolerances by the dtype the dynamics run in.
_DEFAULT_TOLERANCES = {tf.float64: (sb.DEFAULT_RTOL, sb.DEFAULT_ATOL), tf.float32: (1e-5, 1e-7)}


def default_tolerances(dtype: tf.DType) -> tuple[float, float]:
    """``(rtol, atol)`` that suit dynamics evaluated in ``dtype``."""
    return _DEFAULT_TOLERANCES[dtype]


def resolve_tolerances(dtype: tf.DType, rtol, atol):
    """The tolerances checked (non-negative, finite, not both zero), with the dtype's
    defaults for those not given; float32 at a chosen ``rtol < 1e-5`` warns."""
    for tol, label in ((rtol, "rtol"), (atol, "atol")):
        if tol is not None:
            arr = np.asarray(tol, dtype=np.float64)
            if not (np.isfinite(arr).all() and (arr >= 0).all()):
                raise ValueError(f"{label} must be non-negative and finite; got {tol!r}.")
    if dtype == tf.float32 and rtol is not None and float(np.min(rtol)) < 1e-5:
        _tfx.warn_at_caller(
            f"float32 dynamics with rtol={float(np.min(rtol)):g}: below about 1e-5 the "
            "solvers stall on float32 round-off in the derivatives. Use a float64 y0 "
            "(and dynamics) for tight tolerances.")
    default_rtol, default_atol = default_tolerances(dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    sb.check_error_control(rtol, atol)
    return rtol, atol


def refuse_legacy_arguments(kwargs: dict, where: str = "odeint") -> None:
    """A clear error for the adjoint arguments of earlier releases (or any unknown one)."""
    for key in kwargs:
        if key in _ADJOINT_ARGUMENTS:
            raise TypeError(
                f"{where}() no longer takes {key}=: the backward pass's settings belong to "
                f"the adjoint object, e.g. adjoint=tfode.Backsolve({_ADJOINT_ARGUMENTS[key]}=...)"
                " (or tfode.Quadrature, tfode.Interpolating, tfode.Checkpointed).")
        raise TypeError(f"{where}() got an unexpected keyword argument {key!r}.")


@tf.autograph.experimental.do_not_convert
def odeint(func: Callable, y0, t, *, method: str = "lsoda", rtol=None, atol=None,
           options: dict | None = None, adjoint: str | Adjoint | None = None,
           variables=None,
           stats: SolveStats | None = None, jit_compile="auto", name: str | None = None,
           **unknown) -> tf.Tensor:
    """Solves ``dy/dt = func(t, y)`` and returns ``y`` at every time in ``t``, differentiably.

    Args:
        func: ``func(t, y) -> dy/dt`` built from TensorFlow ops: a Keras layer or
            model, a ``tf.Module`` or any callable. Every trainable variable it reads
            (through attributes or closures) is found by tracing it once and gets a
            gradient.
        y0: Initial state at ``t[0]``, any shape, float32 or float64. The dynamics
            are evaluated in this dtype; the solver state is always float64.
        t: 1-D output times, strictly increasing or decreasing.
        method: A SciPy method (:func:`tfode.methods`): ``lsoda`` (default),
            ``adams`` (VODE implicit Adams, the paper's), ``bdf``, ``odeint``,
            ``dopri5``, ``dop853``, ``radau``, ``rk45``, ``rk23``; an adaptive in-graph
            pair, backpropagated through its steps (fast, XLA-compilable, memory
            growing with the steps; a gradient under ``jit_compile=True`` needs
            ``options={"max_steps": N}``, which XLA preallocates for):
            ``tf_dopri5``, ``tf_bosh3``; or a fixed-step
            in-graph method: ``euler``, ``midpoint``, ``rk4``. One name is one
            integrator in the forward solve, every adjoint and events.
        rtol: Relative tolerance (SciPy methods); default 1e-7 for a float64 state,
            1e-5 for a float32 one (float32 derivatives cannot support tighter).
        atol: Absolute tolerance (SciPy methods); default 1e-9 (float64), 1e-7
            (float32).
        options: Solver options: for the SciPy methods those of
            :func:`solvers_bridge.solve` (``max_steps``, ``first_step``,
            ``max_step``, ``min_step``, ``max_fd_jacobian_size``, ...) plus
            ``jacobian="autodiff"`` (hand the solver the dense Jacobian computed by
            TensorFlow) or ``jacobian="banded"`` (for a batch of independent samples
            along the state's first axis: one batch Jacobian gives the ``d x d``
            blocks, handed over as a band or a sparse matrix, never a dense
            ``n x n``), for the methods that take Jacobians; for the fixed-step
            methods ``step_size`` or ``num_steps`` (steps per output interval,
            default 1).
        adjoint: How the gradient is computed: an adjoint object
            (:class:`tfode.Backsolve`, :class:`tfode.Quadrature`,
            :class:`tfode.Interpolating`, :class:`tfode.Checkpointed`, each with its
            backward method, tolerances and options) or the name of one for its
            defaults. ``"backsolve"`` (default) is the paper's: O(1) memory, unstable
            on stiff dynamics; the others keep the forward solution (or checkpoints)
            and give right gradients through stiff dynamics.
        variables: The variables to differentiate; default: every trainable
            variable ``func`` reads. A read variable missing from this list warns.
        stats: A :class:`SolveStats` to receive the forward and backward statistics.
        jit_compile: ``"auto"`` (default: XLA-compile the dynamics callbacks unless
            they hold ``tf.debugging`` assertions, which XLA drops, convolutions on
            a machine without a GPU, or loops; a fixed rule, so every process makes
            the same choice), ``True`` (warn if XLA cannot, or drops assertions) or
            ``False``.
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
    refuse_legacy_arguments(unknown)
    with tf.name_scope(name or "odeint"):
        y0 = check_state(y0)
        t = _as_float64(t) if not isinstance(t, (tf.Tensor, tf.Variable)) else t
        if t.shape.rank != 1 or t.shape[0] == 0:
            raise ValueError(f"t must be a non-empty 1-D tensor of times; got shape {t.shape}.")
        if not t.dtype.is_floating and not t.dtype.is_integer:
            raise TypeError(f"t must be real; got dtype {t.dtype.name}.")
        t_static = tf.get_static_value(t)
        if t_static is not None:
            sb.check_times(t_static)
        options = dict(options or {})
        if method in TABLEAUX or method in PAIRS:
            return _in_graph(func, y0, t, method, rtol, atol, options, adjoint, stats)
        op = _Op(func, y0, method, rtol, atol, options, adjoint, variables, stats, jit_compile)
        return op.solve(y0, t)


def check_state(y0) -> tf.Tensor:
    y0 = tf.convert_to_tensor(y0)
    if not y0.dtype.is_floating or y0.dtype not in (tf.float32, tf.float64):
        raise TypeError(
            f"y0 has dtype {y0.dtype.name}; tfode integrates float32 or float64 states "
            "(16-bit dynamics make the solvers stall). Cast y0, and pin the dynamics' "
            "layers to float32 or wider under mixed precision.")
    return y0


def _in_graph(func, y0, t, method, rtol, atol, options, adjoint, stats):
    """The in-graph methods: fixed steps, or an adaptive pair; backpropagated."""
    allowed = FIXED_OPTIONS if method in TABLEAUX else ADAPTIVE_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        kind = "fixed-step" if method in TABLEAUX else "in-graph adaptive"
        raise TypeError(f"Unknown option(s) {unknown} for {kind} method '{method}'. "
                        f"Its options are {sorted(allowed)}.")
    if adjoint not in (None, "backsolve"):  # (the name of every block's default)
        raise ValueError(
            f"method={method!r} runs in the TensorFlow graph and is differentiated by "
            "backpropagation through its steps; adjoint= applies to the SciPy methods "
            f"({', '.join(sorted(sb.METHODS))}). Drop adjoint=, or pick a SciPy method.")
    if method in TABLEAUX:
        if t.shape[0] is None:
            raise ValueError("Fixed-step methods need the number of output times when the "
                             "graph is built; t has an unknown length.")
        counts = steps_per_interval(t, **options)
        ys, nfev = fixed_odeint(func, y0, t, method, counts)
        vector = tf.constant([nfev, 0, sum(counts), 0, 0], tf.int64)
    else:
        options = {key: sb.check_option(key, value) for key, value in options.items()}
        rtol, atol = resolve_tolerances(y0.dtype, rtol, atol)
        if np.ndim(rtol) or np.ndim(atol):
            raise ValueError(f"method={method!r} takes scalar rtol and atol only; use "
                             "'adams', 'bdf' or 'lsoda' for per-component tolerances.")
        rtol, atol = float(rtol), float(atol)

        if tf.executing_eagerly():  # one graph for the loop, not an op at a time
            ys, vector, where = _eager_solve(func, method, rtol, atol, options)(y0, t)
            raise_if_failed(method, vector, where)
        else:
            ys, vector, _ = adaptive_odeint(func, y0, t, method, rtol, atol, **options)
    if stats is None:
        return ys
    with tf.control_dependencies(stats.record("forward", vector)):
        ys = tf.identity(ys)
    # Backpropagation through the steps takes one VJP per forward evaluation: recorded
    # when (and only when) the gradient is computed.
    backward = tf.concat([vector[:1], tf.zeros([4], tf.int64)], 0)

    @tf.custom_gradient
    def mark_backward(x):
        def grad(dy):
            with tf.control_dependencies(stats.record("backward", backward)):
                return tf.identity(dy)

        return tf.identity(x), grad

    return mark_backward(ys)


#: The compiled loops of eager in-graph solves, per dynamics function (weakly: a
#: function that goes away takes its loops with it) and configuration.
_EAGER_SOLVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _eager_solve(func, method, rtol, atol, options):
    """The ``tf.function`` of an eager in-graph solve, traced once per dynamics,
    configuration and input signature (not on every call: a trace costs about 80x the
    solve of a small problem)."""
    owner, inner = (func.__self__, func.__func__) if inspect.ismethod(func) else (func, None)
    try:
        key = (inner, method, rtol, atol, tuple(sorted(options.items())))
        hash(key)
        cache = _EAGER_SOLVES.setdefault(owner, {})
    except TypeError:  # unhashable options or an owner without weak references
        key, cache = None, {}
    if key in cache:
        return cache[key]
    owner_ref = weakref.ref(owner) if key is not None else (lambda: owner)

    def dynamics(s, y):  # through a weak reference: the cache must not keep func alive
        return owner_ref()(s, y) if inner is None else inner(owner_ref(), s, y)

    def solve(y0, t):
        return adaptive_odeint(dynamics, y0, t, method, rtol, atol, **options)

    cache[key] = fn = tf.function(solve, autograph=False)
    return fn


class _Op:
    """One adaptive solve: the compiled dynamics, the forward solve's description, the
    adjoint, and the NumPy halves the op runs (forward, forward-to-event, backward)."""

    def __init__(self, func, y0, method, rtol, atol, options, adjoint, variables, stats,
                 jit_compile):
        cls = sb.get_method(method) if method in sb.METHODS else None
        if method in PAIRS or method in TABLEAUX:
            raise ValueError(f"method={method!r} runs in the TensorFlow graph and solves to "
                             "output times only; this operation takes the SciPy methods: "
                             f"{', '.join(sorted(sb.METHODS))}.")
        if cls is None:
            raise ValueError(f"Unknown method {method!r}. Valid methods are: "
                             f"{', '.join(methods())}.")
        for moved in ("nodes", "checkpoints"):
            if moved in options:
                raise TypeError(
                    f"options[{moved!r}] is an argument of the adjoint now: e.g. "
                    f"adjoint=tfode.Checkpointed({moved}={options[moved]!r}) or "
                    f"tfode.Quadrature(nodes=...).")
        self.adjoint = as_adjoint("backsolve" if adjoint is None else adjoint)
        integrator = cls.integrator
        if integrator is not None and integrator in tracing_integrators():
            raise sb.NestedSolveError(
                f"odeint(method={method!r}) is called inside dynamics that are themselves "
                f"being integrated with the same integrator ({integrator}), which is not "
                "reentrant. Use a different method for the inner solve (e.g. 'dopri5' "
                "inside 'lsoda', or a reentrant one: 'radau', 'rk45', 'rk23').",
                method=method)
        rtol, atol = resolve_tolerances(y0.dtype, rtol, atol)
        jacobian = options.pop("jacobian", None)
        if jacobian not in _JACOBIANS:
            raise ValueError(f"options['jacobian'] must be 'autodiff', 'banded' or absent; "
                             f"got {jacobian!r}.")
        if jacobian and not cls.jacobians:
            takes = sorted(m for m, c in sb.METHODS.items() if c.jacobians)
            raise ValueError(f"jacobian={jacobian!r} needs a method that uses a Jacobian "
                             f"({', '.join(takes)}); got {method!r}.")
        if jacobian == "autodiff" and ("lband" in options or "uband" in options):
            raise ValueError(
                "jacobian='autodiff' hands the solver the dense n x n Jacobian, but lband/"
                "uband declare a banded one. Drop lband and uband, or use "
                "jacobian='banded' for a batch of independent samples (it sets the band "
                "itself), or drop jacobian= to let the solver difference a banded one.")
        if jacobian == "banded" and ("lband" in options or "uband" in options):
            raise ValueError("jacobian='banded' sets lband = uband = d - 1 (d the size of "
                             "one sample) itself; do not pass lband or uband with it.")
        self.compiled = compile_dynamics(func, y0.dtype, y0.shape, integrator or method,
                                         variables, jit_compile)
        n_params = int(sum(int(np.prod(v.shape)) for v in self.compiled.variables))
        self.spec = SolveSpec(method, rtol, atol, options, jacobian, n_params)
        self.stats = stats
        # Validate the tolerances and options now rather than inside the graph.
        cls(np.asarray(rtol, np.float64), np.asarray(atol, np.float64), None, **options)
        self.adjoint.check(self.spec)

    # -- the NumPy halves -------------------------------------------------------------

    def _callbacks(self, shape):
        """The callbacks for a state shape, with the Jacobian callback the solve needs
        traced now: a tape inside a function traced under ``stop_recording`` records
        nothing (the Jacobian would be zero)."""
        cb = self.compiled.callbacks(shape)
        self.spec.jacobians(cb)
        return cb

    def forward(self, y0, t, shape):
        cb = self._callbacks(shape)
        with _tfx.stop_recording():
            ys, saved, info = self.adjoint.forward(self.spec, cb, y0, t)
        if self.stats is not None:
            self.stats.forward_info = info
        return ys, np.asarray(saved, np.float64), np.asarray(info_vector(info), np.int64)

    def forward_event(self, y0, t0, shape, event):
        cb = self._callbacks(shape)
        with _tfx.stop_recording():
            t_out, ys, saved, info = self.adjoint.forward_event(self.spec, cb, y0, float(t0),
                                                                event)
        if self.stats is not None:
            self.stats.forward_info = info
        return (t_out, ys, np.asarray(saved, np.float64),
                np.asarray(info_vector(info), np.int64))

    def backward(self, ys, dys, t, saved, shape, time_gradients=True):
        cb = self._callbacks(shape)
        with _tfx.stop_recording():
            res = self.adjoint.backward(self.spec, cb, t, ys, dys, saved, time_gradients)
        if self.stats is not None:
            self.stats.backward_info = res.info
        return (res.grad_y0, res.grad_t, res.grad_params,
                np.asarray(info_vector(res.info), np.int64))

    # -- the TensorFlow op ------------------------------------------------------------

    def solve(self, y0, t):
        """The states at ``t``, differentiable with respect to ``y0``, ``t`` and the
        dynamics' variables."""
        y0_flat = tf.reshape(tf.cast(y0, _F64), [-1])
        t64 = _as_float64(t)
        ys_flat, saved, fstats = _numpy_call(self.forward, [y0_flat, t64, tf.shape(y0)],
                                             [_F64, _F64, tf.int64], "solve")
        ys_flat.set_shape([t.shape[0], y0.shape.num_elements()])
        ys_flat = self._record("forward", fstats, ys_flat)
        ys = self._attach(y0, y0_flat, t64, t64, ys_flat, saved, lambda gt, t_in: gt,
                          time_gradients=_may_need_gradient(t))
        out_shape = tf.concat([tf.shape(t)[:1], tf.shape(y0)], 0)
        ys = tf.cast(tf.reshape(ys, out_shape), y0.dtype)
        ys.set_shape(tf.TensorShape([t.shape[0]]).concatenate(y0.shape))
        return ys

    def solve_to_event(self, y0, t0, event):
        """``(t_out, ys)``: ``t_out = [t0, t_1, ...]`` with the event times (no
        gradient: see :func:`tfode.odeint_event`) and the states there,
        differentiable at those fixed times."""
        y0_flat = tf.reshape(tf.cast(y0, _F64), [-1])
        t0 = _as_float64(t0)
        t_out, ys_flat, saved, fstats = _numpy_call(
            lambda y, s, sh: self.forward_event(y, s, sh, event), [y0_flat, t0, tf.shape(y0)],
            [_F64, _F64, _F64, tf.int64], "solve_to_event")
        count = 2 if event.terminal else None
        t_out.set_shape([count])
        ys_flat.set_shape([count, y0.shape.num_elements()])
        ys_flat = self._record("forward", fstats, ys_flat)
        ys = self._attach(y0, y0_flat, t0, t_out, ys_flat, saved,
                          lambda gt, t_in: tf.reshape(gt[0], tf.shape(t_in)))
        out_shape = tf.concat([tf.shape(t_out)[:1], tf.shape(y0)], 0)
        ys = tf.cast(tf.reshape(ys, out_shape), y0.dtype)
        return tf.stop_gradient(t_out), ys

    def _record(self, which, vector, tensor):
        if self.stats is None:
            return tensor
        with tf.control_dependencies(self.stats.record(which, vector)):
            return tf.identity(tensor)

    def _attach(self, y0, y0_flat, t_in, t_used, ys_flat, saved, time_gradient,
                time_gradients=True):
        """``ys_flat`` with the adjoint as its gradient (``saved`` kept for it);
        without ``time_gradients`` the adjoint skips ``dL/dt`` (zeros)."""
        def backward(*args):
            return self.backward(*args, time_gradients=time_gradients)

        params = [tf.convert_to_tensor(v) for v in self.compiled.variables]
        shape = tf.shape(y0)

        @tf.custom_gradient
        def attach_adjoint(y0_in, t_arg, *param_in):
            def grad(dys):
                dys = tf.cast(tf.convert_to_tensor(dys), _F64)
                gy0, gt, gp, bstats = _numpy_call(backward,
                                                  [ys_flat, dys, t_used, saved, shape],
                                                  [_F64, _F64, _F64, tf.int64], "adjoint")
                gy0 = self._record("backward", bstats, gy0)
                sizes = [int(np.prod(p.shape)) for p in param_in]
                parts = tf.split(gp, sizes) if sizes else []
                gparams = [tf.cast(tf.reshape(g, p.shape), p.dtype)
                           for g, p in zip(parts, param_in)]
                return [gy0, time_gradient(gt, t_arg)] + gparams

            return tf.identity(ys_flat), grad

        return attach_adjoint(y0_flat, t_in, *params)


def _may_need_gradient(t) -> bool:
    """Whether a gradient may be asked of the times ``t``: yes for variables and
    tensors a gradient tape watches; otherwise not for eager tensors, constants and
    ``tf.stop_gradient`` outputs (``tf.gradients`` with respect to a constant's
    times, with no tape, gets zeros), and yes for other graph tensors. Without it
    the adjoint skips the evaluations of ``dL/dt``."""
    if isinstance(t, tf.Variable) or _tfx.should_record_backprop([t]):
        return True
    if tf.executing_eagerly() or _tfx.is_eager_tensor(t):  # also: captured by a graph
        return False
    return t.op.type not in ("Const", "StopGradient")


def _numpy_call(fn, inputs, dtypes, name):
    """``fn`` on the NumPy values of ``inputs``: called directly when eager, else as one
    ``tf.numpy_function``; its outputs as tensors either way."""
    if tf.executing_eagerly():
        return [tf.constant(out) for out in fn(*[x.numpy() for x in inputs])]

    def in_op(*args):
        with in_graph_op():
            return fn(*args)

    return tf.numpy_function(in_op, inputs, dtypes, stateful=True, name=name)


def _as_float64(t) -> tf.Tensor:
    """Times as float64 tensors (a float64 cast of a float32 tensor keeps its rounding,
    so Python numbers are converted as float64 directly)."""
    if isinstance(t, (tf.Tensor, tf.Variable)):
        return tf.cast(t, _F64)
    return tf.convert_to_tensor(np.asarray(t, dtype=np.float64), _F64)
