"""Compiling a TensorFlow dynamics function into NumPy callbacks for the bridge.

The solver calls the dynamics thousands of times, so each call must be cheap: one
concrete function per (state shape, dtype), traced once, XLA-compiled where
possible, and invoked through its flat call path with a single float64 array in
and a single float64 array out (one host-device copy each way on a GPU).
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import tensorflow as tf

import solvers_bridge as sb
from solvers_bridge import SolverError
from tfode import _tf_internals as _tfx
from tfode._threads import check_callbacks_can_run

_F64 = tf.float64
_tracing = threading.local()


def tracing_integrators() -> list[str]:
    """The integrators whose dynamics are being traced in this thread (outermost first)."""
    stack = getattr(_tracing, "stack", None)
    if stack is None:
        stack = _tracing.stack = []
    return stack


@contextlib.contextmanager
def _tracing_for(integrator: str):
    """Marks this thread as tracing dynamics for ``integrator`` (for the nesting check),
    and undoes AutoGraph's re-wrapping of tfode's own errors raised during the trace."""
    stack = tracing_integrators()
    stack.append(integrator)
    try:
        yield
    except Exception as exc:
        original = exc.__context__
        if isinstance(original, SolverError) and not isinstance(exc, SolverError):
            raise original from None
        # AutoGraph re-raises the dynamics' error as a new one without its notes.
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not getattr(exc, "__notes__", None):
            for note in getattr(cause, "__notes__", ()):
                exc.add_note(note)
            cause = cause.__cause__ or cause.__context__
        raise
    finally:
        stack.pop()


def _call_dynamics(func, t, y, shape):
    """Calls ``func(t, y)`` and checks that it returned a float tensor of the state's shape."""
    try:
        out = func(t, y)
    except Exception as exc:
        exc.add_note(_trace_note(exc, y))
        raise
    if not (isinstance(out, (tf.Tensor, tf.Variable, np.ndarray)) or hasattr(out, "dtype")):
        raise TypeError(
            f"The dynamics returned a {type(out).__name__}; it must return one tensor "
            "dy/dt with the shape of the state y."
        )
    out = tf.convert_to_tensor(out)
    if not out.dtype.is_floating:
        raise TypeError(f"The dynamics returned dtype {out.dtype.name}; expected a "
                        f"floating-point tensor like the state ({y.dtype.name}).")
    if out.dtype.size < min(y.dtype.size, 4):
        raise TypeError(
            f"The dynamics returned {out.dtype.name} for a {y.dtype.name} state: 16-bit "
            "derivatives make the solution 20x to 7,000x less accurate (and the solver "
            "stall at tight tolerances). Compute the dynamics in the state's dtype (under "
            "mixed precision give their layers dtype='float32' or wider), or cast the "
            "result: tf.cast(dydt, y.dtype).")
    if not out.shape.is_compatible_with(shape):
        raise ValueError(
            f"The dynamics returned a tensor of shape {out.shape} for a state of shape "
            f"{tuple(shape)}. func(t, y) must return dy/dt with exactly the shape of y."
        )
    return tf.cast(out, y.dtype)


_DTYPE_MISMATCH = re.compile(r"(float|int|double|half|bfloat)\w*.*(does not match|"
                             r"expected|must be|incompatible).*(float|int|double|half)",
                             re.IGNORECASE | re.DOTALL)


def _trace_note(exc: BaseException, y) -> str:
    """The note added to an error the dynamics raise while tfode traces them: the
    calling convention, and where a dtype clash comes from."""
    note = (f"(raised by the dynamics function while tfode traced it: tfode calls "
            f"func(t, y), t a scalar {y.dtype.name} tensor and y the state of shape "
            f"{tuple(y.shape)} and dtype {y.dtype.name}. Dynamics written f(y, t), or a "
            "layer that takes y alone such as keras.layers.Dense, need a wrapper: "
            "lambda t, y: layer(y).")
    if _DTYPE_MISMATCH.search(str(exc)):
        note += (f" The dynamics run in y0's dtype, {y.dtype.name}; a Python list or "
                 "float given as y0 becomes float32. Give y0 in the dtype of the dynamics' "
                 "variables, e.g. tf.constant(y0, tf.float64), or build them in "
                 f"{y.dtype.name}.")
    return note + ")"


def discover_variables(func: Callable, dtype: tf.DType, shape, integrator: str) -> list:
    """Traces ``func`` once on a symbolic state and returns the trainable variables it reads.

    Variables read through closures, Keras layers and ``tf.Module`` attributes are
    all found, because the trace records every variable access.
    """
    spec_t = tf.TensorSpec([], dtype)
    spec_y = tf.TensorSpec(shape, dtype)
    with _tracing_for(integrator):
        cf = tf.function(lambda t, y: _call_dynamics(func, t, y, shape)).get_concrete_function(
            spec_t, spec_y)
    # The graph lists its variables in an order that depends on their memory addresses;
    # the order in which the trace first read them is the same in every process (and
    # decides where each parameter sits in the adjoint state, so the solver's error
    # norms, and the results' last bits, do not change from one process to the next).
    first_read = {id(outer): k for k, (outer, _) in enumerate(cf.graph.captures)}
    return sorted(cf.graph.trainable_variables,
                  key=lambda v: first_read.get(id(v.handle), len(first_read)))


def _match_variables(here: list, there: list) -> list:
    """Orders ``here`` (variables read in the solver's thread) like ``there`` (those the
    op was built with): the same objects, or, under a distribution strategy, the
    components of the same mirrored variables (``name/replica_k`` is ``name``)."""
    by_id = {id(v): v for v in here}
    if len(here) == len(there) and all(id(v) in by_id for v in there):
        return [by_id[id(v)] for v in there]

    def canonical(v):
        return re.sub(r"/replica_\d+(?=:|$)", "", v.name)

    by_name = {canonical(v): v for v in here}
    if (len(by_name) == len(here) == len(there)
            and all(canonical(v) in by_name for v in there)):
        matched = [by_name[canonical(v)] for v in there]
        if all(tuple(a.shape) == tuple(b.shape) for a, b in zip(matched, there)):
            return matched
    raise RuntimeError(
        "The dynamics read different variables when traced for the solver "
        f"({[v.name for v in here]}) than when the op was built "
        f"({[v.name for v in there]}); pass variables= explicitly.")


#: Ops XLA drops: a user's assertions would silently stop firing.
_ASSERTION_OPS = frozenset({"Assert", "CheckNumerics", "CheckNumericsV2"})
#: Convolutions: oneDNN's beat XLA's on a CPU.
_CONV_OPS = frozenset({"Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput",
                       "Conv2DBackpropFilter", "Conv"})
#: Loops (a batch Jacobian inside the dynamics ran 80x slower under XLA here).
_LOOP_OPS = frozenset({"While", "StatelessWhile"})


def _op_types(cf) -> set:
    """Every op type in a concrete function's graph, nested functions included."""
    types = {op.type for op in cf.graph.get_operations()}
    for fdef in cf.graph.as_graph_def().library.function:
        types.update(node.op for node in fdef.node_def)
    return types


def _has_assertions(cf) -> bool:
    return bool(_op_types(cf) & _ASSERTION_OPS)


def _xla_unsuitable(cf) -> str | None:
    """Why ``jit_compile="auto"`` runs these dynamics without XLA, or ``None`` to use
    it: assertions (XLA strips them), convolutions without a GPU, loops."""
    types = _op_types(cf)
    if types & _ASSERTION_OPS:
        return "the dynamics hold assertions, which XLA drops"
    if types & _CONV_OPS and not tf.config.list_logical_devices("GPU"):
        return "convolutions run faster without XLA on a CPU"
    if types & _LOOP_OPS:
        return "loops inside the dynamics run slower under XLA"
    return None


class Callbacks:
    """NumPy callbacks for one state shape: ``fun``, ``vjp`` and (lazily) ``jac``.

    Attributes:
        fun: ``fun(t, y_flat) -> f_flat`` (float64 NumPy).
        vjp: ``vjp(t, y_flat, a_flat) -> [f, a^T df/dy, a^T df/dt, a^T df/dtheta]``.
        jit: Whether the XLA-compiled functions are used: with ``True`` whenever XLA
            compiles them; with ``"auto"`` by a fixed rule on the dynamics' graph (see
            :func:`_xla_unsuitable`), never by timing, so that every process makes the
            same choice and gets the same bits.
        jit_reason: Why ``"auto"`` did not use XLA (``None`` if it did).
    """

    def __init__(self, func, dtype, shape, variables, integrator, jit_compile,
                 rediscover: bool = False):
        self._func, self._dtype, self.shape = func, dtype, tuple(shape)
        self._integrator = integrator
        self._variables = list(variables)
        if rediscover:
            # The callbacks run in the solver's thread, outside any distribution-strategy
            # replica, where a mirrored variable reads as its first component. Watch the
            # variables the dynamics read here: they correspond one to one (same trace
            # order, same values) to those the op's caller passed in.
            here = discover_variables(func, dtype, self.shape, integrator)
            self._variables = _match_variables(here, self._variables)
        self.n = int(np.prod(self.shape, dtype=np.int64))
        self._jac = self._block_jac = None
        self.jit = False
        f_cf, vjp_cf = self._trace(jit=False)
        self.jit_reason = _xla_unsuitable(vjp_cf) if jit_compile == "auto" else None
        if jit_compile is True and self.jit_reason is None and _has_assertions(vjp_cf):
            _tfx.warn_at_caller(
                "jit_compile=True: XLA drops the tf.debugging assertions (and "
                "tf.debugging.check_numerics) inside the dynamics, so they will not fire. "
                "Use jit_compile='auto' or False to keep them.")
        if jit_compile is True or (jit_compile == "auto" and self.jit_reason is None):
            try:  # XLA compiles at the first call; fall back if it cannot
                xla = self._trace(jit=True)
                self._warm(*xla)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                    tf.errors.InternalError, tf.errors.UnknownError) as exc:
                self.jit_reason = f"XLA could not compile them ({type(exc).__name__})"
                if jit_compile is True:
                    _tfx.warn_at_caller(f"XLA could not compile the dynamics "
                                        f"({type(exc).__name__}); running them without "
                                        "jit_compile.")
            else:
                f_cf, vjp_cf = xla
                self.jit = True
        f_call, vjp_call = _tfx.flat_caller(f_cf), _tfx.flat_caller(vjp_cf)
        const = _tfx.float64_converter()  # the bridge's arrays are fresh copies

        def fun(t, y):
            return f_call(const(t), const(y)).numpy()

        def vjp(t, y, a):
            return vjp_call(const(t), const(y), const(a)).numpy()

        self.fun, self.vjp = fun, vjp

    def _warm(self, f_cf, vjp_cf) -> None:
        """One evaluation and one VJP (XLA compiles, and can fail, at the first call)."""
        t, y = tf.constant(0.0, _F64), tf.zeros([self.n], _F64)
        f_cf(t, y).numpy()
        vjp_cf(t, y, y).numpy()

    def _trace(self, jit: bool):
        func, dtype, shape, variables = self._func, self._dtype, self.shape, self._variables
        n = self.n

        def f(t, y):
            yc = tf.reshape(tf.cast(y, dtype), shape)
            out = _call_dynamics(func, tf.cast(t, dtype), yc, shape)
            return tf.reshape(tf.cast(out, _F64), [n])

        def vjp(t, y, a):
            tc = tf.cast(t, dtype)
            yc = tf.reshape(tf.cast(y, dtype), shape)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([tc, yc, *variables])
                out = _call_dynamics(func, tc, yc, shape)
            grads = tape.gradient(out, [yc, tc, *variables],
                                  output_gradients=tf.reshape(tf.cast(a, out.dtype), shape),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            parts = [tf.reshape(tf.cast(out, _F64), [-1])]
            parts += [tf.reshape(tf.cast(tf.convert_to_tensor(g), _F64), [-1]) for g in grads]
            return tf.concat(parts, 0)

        spec_t, spec_y = tf.TensorSpec([], _F64), tf.TensorSpec([n], _F64)
        with _tracing_for(self._integrator):
            f_cf = tf.function(f, jit_compile=jit).get_concrete_function(spec_t, spec_y)
            vjp_cf = tf.function(vjp, jit_compile=jit).get_concrete_function(spec_t, spec_y, spec_y)
        return f_cf, vjp_cf

    def _numpy_callback(self, fn) -> Callable:
        """``fn(t, y_flat)`` traced once (float64 scalar and flat state) and wrapped as
        a NumPy callback."""
        check_callbacks_can_run(False, None, what="Jacobian callbacks")
        spec_t, spec_y = tf.TensorSpec([], _F64), tf.TensorSpec([self.n], _F64)
        with _tracing_for(self._integrator):
            cf = tf.function(fn).get_concrete_function(spec_t, spec_y)
        call, const = _tfx.flat_caller(cf), _tfx.float64_converter()
        return lambda t, y: call(const(t), const(y)).numpy()

    @property
    def jac(self) -> Callable:
        """``jac(t, y_flat) -> (n, n)`` dense Jacobian by autodiff (traced on first use)."""
        if self._jac is None:
            func, dtype, shape, n = self._func, self._dtype, self.shape, self.n

            def jac(t, y):
                with tf.GradientTape() as tape:
                    tape.watch(y)
                    yc = tf.reshape(tf.cast(y, dtype), shape)
                    out = tf.reshape(tf.cast(_call_dynamics(func, tf.cast(t, dtype), yc, shape),
                                             _F64), [n])
                return tape.jacobian(out, y, unconnected_gradients=tf.UnconnectedGradients.ZERO)

            self._jac = self._numpy_callback(jac)
        return self._jac

    @property
    def block_jac(self) -> Callable:
        """``block_jac(t, y_flat) -> (B, d, d)``: the Jacobian blocks of a batch of
        independent samples (the state's first axis; ``d`` the size of one sample),
        by one batch Jacobian (``d`` VJPs, not ``n``). Traced on first use; its
        ``block_shape`` attribute is ``(B, d)``."""
        if self._block_jac is None:
            func, dtype, shape, n = self._func, self._dtype, self.shape, self.n
            if len(shape) < 2:
                raise ValueError(
                    f"A banded per-sample Jacobian needs a batch of samples along the first "
                    f"axis of the state; the state has shape {shape}. Use "
                    "jacobian='autodiff' for a dense one.")
            batch, d = shape[0], n // shape[0]

            def block_jac(t, y):
                yc = tf.reshape(tf.cast(y, dtype), shape)
                with tf.GradientTape() as tape:
                    tape.watch(yc)
                    out = _call_dynamics(func, tf.cast(t, dtype), yc, shape)
                    out = tf.reshape(tf.cast(out, _F64), [batch, d])
                blocks = tape.batch_jacobian(
                    out, yc, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return tf.reshape(tf.cast(blocks, _F64), [batch, d, d])

            self._block_jac = self._numpy_callback(block_jac)
            self._block_jac.block_shape = (batch, d)
        return self._block_jac


class CompiledDynamics:
    """A dynamics function with its discovered variables and per-shape callbacks.

    Cached per function object (weakly), dtype, symbolic state shape and variable
    list, so repeated ``odeint`` calls on the same function trace nothing new.
    """

    def __init__(self, func, dtype, spec_shape, integrator, variables, jit_compile,
                 replica=None):
        self.func, self.dtype = func, dtype
        self.integrator, self.jit_compile = integrator, jit_compile
        discovered = discover_variables(func, dtype, spec_shape, integrator)
        # Under a distribution strategy the callbacks must find the variables they read
        # again (see Callbacks); elsewhere the discovered ones are the ones read.
        self.rediscover = variables is None and replica is not None
        if variables is None:
            self.variables = discovered
        else:
            self.variables = list(variables)
            given = {id(unwrap_variable(v)) for v in self.variables}
            missed = [v for v in discovered if id(v) not in given]
            if missed:
                _tfx.warn_at_caller(
                    f"The dynamics read trainable variable(s) {[v.name for v in missed]} that "
                    "are not in variables=; they will get no gradient. Leave variables=None "
                    "to let tfode find every variable, or add them.")
            self.variables = [unwrap_variable(v) for v in self.variables]
        self._callbacks: dict[tuple, Callbacks] = {}
        self._lock = threading.Lock()

    def callbacks(self, shape) -> Callbacks:
        """Returns the callbacks for a concrete state shape, tracing them on first use."""
        key = tuple(int(s) for s in shape)
        cb = self._callbacks.get(key)
        if cb is None:
            with self._lock:
                cb = self._callbacks.get(key)
                if cb is None:
                    cb = Callbacks(self.func, self.dtype, key, self.variables, self.integrator,
                                   self.jit_compile, rediscover=self.rediscover)
                    self._callbacks[key] = cb
        check_callbacks_can_run(cb.jit, cb.jit_reason)
        return cb


def unwrap_variable(v):
    """The ``tf.Variable`` behind a Keras 3 variable (or ``v`` itself)."""
    inner = getattr(v, "value", None)
    return inner if isinstance(inner, tf.Variable) else v



#: Compiled dynamics, most recently used last. Bounded, because a compiled function
#: holds its dynamics (and their variables) alive; entries are checked by identity
#: through a weak reference so that a recycled ``id`` never hits a stale entry.
_cache: OrderedDict = OrderedDict()
CACHE_SIZE = 64


def _replica_id():
    """The replica being traced under a distribution strategy (``None`` outside one).

    Each replica reads its own components of mirrored variables, so each gets its
    own compiled dynamics: the gradient must reach that replica's components."""
    if not tf.distribute.has_strategy():
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return None
    rid = tf.get_static_value(ctx.replica_id_in_sync_group)
    return None if rid is None else int(rid)


def compile_dynamics(func, dtype, spec_shape, integrator, variables=None,
                     jit_compile="auto") -> CompiledDynamics:
    """Returns the (cached) :class:`CompiledDynamics` of ``func``."""
    shape = tuple(tf.TensorShape(spec_shape).as_list())
    replica = _replica_id()
    key = (id(func), replica, dtype, shape, integrator, jit_compile,
           None if variables is None else tuple(id(v) for v in variables))
    entry = _cache.get(key)
    if entry is not None and entry[0]() is func:
        _cache.move_to_end(key)
        return entry[1]
    compiled = CompiledDynamics(func, dtype, spec_shape, integrator, variables, jit_compile,
                                replica)
    try:
        ref = weakref.ref(func)
    except TypeError:  # not weak-referenceable: not cached
        return compiled
    _cache[key] = (ref, compiled)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return compiled


def numpy_callbacks(func: Callable, shape, dtype=tf.float64, *, method: str = "adams",
                    variables=None, jit_compile="auto") -> Callbacks:
    """The NumPy callbacks tfode hands the solvers for ``func`` at one state shape.

    For measuring what one evaluation costs the solver, or for driving
    :mod:`solvers_bridge` directly with TensorFlow dynamics.

    Args:
        func: The dynamics ``func(t, y)``, as for :func:`tfode.odeint`.
        shape: The state's shape.
        dtype: The dtype the dynamics are evaluated in.
        method: The method the callbacks are for (for the nesting guard).
        variables: As for :func:`tfode.odeint`.
        jit_compile: As for :func:`tfode.odeint`.

    Returns:
        The callbacks: ``fun(t, y_flat)``, ``vjp(t, y_flat, a_flat)`` (the flat
        ``[f, a^T df/dy, a^T df/dt, a^T df/dtheta]``), ``jac``, ``block_jac``, and
        ``jit`` (whether the XLA-compiled functions are used).
    """
    cls = sb.get_method(method)
    shape = tuple(int(s) for s in shape)
    compiled = compile_dynamics(func, tf.as_dtype(dtype), tf.TensorShape(shape),
                                cls.integrator or method, variables, jit_compile)
    return compiled.callbacks(shape)
