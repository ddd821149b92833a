"""Keras 3 layers built on :func:`tfode.odeint`.

* :class:`ODEBlock` integrates its input with a dynamics layer ``dynamics(t, h)``;
  with the SciPy methods its gradient is the paper's adjoint, with ``euler``,
  ``midpoint`` or ``rk4`` it backpropagates through the steps (an RK-Net).
* Dynamics layers: :class:`ConcatConv2D` (time as an extra input channel),
  :class:`ConvODEFunc` (the paper's MNIST ODE function) and :class:`ConcatMLP`.
* Every block reports its forward and backward function evaluations (``nfe_f``,
  ``nfe_b``) to the model's logs by itself; :class:`NFE` (a metric under a name of
  one's own) and :class:`NFELogger` (a callback with per-batch figures and a CSV)
  add to that.

These layers need the TensorFlow backend of Keras; importing this module under
another backend raises an ImportError saying so.
"""

from __future__ import annotations

import os
import weakref

import keras
import numpy as np
import tensorflow as tf

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"tfode.layers needs the TensorFlow backend of Keras, but the backend is "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing keras "
        "(the solver callbacks and the adjoint are TensorFlow ops).")

from tfode import _tf_internals as _tfx  # noqa: E402
from tfode._adjoints import Adjoint, Backsolve, as_adjoint  # noqa: E402
from tfode._compile import unwrap_variable as _unwrap  # noqa: E402
from tfode._odeint import _ADJOINT_ARGUMENTS as _LEGACY  # noqa: E402
from tfode._odeint import odeint, refuse_legacy_arguments  # noqa: E402
from tfode._regularize import RegularizedDynamics  # noqa: E402
from tfode._stats import SolveStats  # noqa: E402

_PACKAGE = "tfode"
_SIXTEEN_BIT = ("float16", "bfloat16")
_ODE_ARGS = ("method", "rtol", "atol", "options", "adjoint", "jit_compile")

#: Live blocks by name, so that a reloaded NFE metric finds its block again.
_BLOCKS: dict[str, weakref.ref] = {}

SAVEDMODEL_MESSAGE = (
    "tfode layers cannot be exported as a TensorFlow SavedModel: the solver is a Python "
    "callback (tf.numpy_function) that a SavedModel cannot carry, so the export would "
    "not reload in another process. Save with model.save('model.keras') and load it with "
    "keras.saving.load_model after importing tfode.layers.")


def _pin_precision(layer: keras.layers.Layer) -> None:
    """Keeps an ODE layer and all its sublayers at float32 or wider under a
    mixed-precision policy: 16-bit dynamics make LSODA and VODE stall and return
    garbage."""
    for sub in _tfx.sublayers(layer):
        if sub.compute_dtype in _SIXTEEN_BIT or sub.variable_dtype in _SIXTEEN_BIT:
            sub.dtype_policy = "float32"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ODEBlock(keras.layers.Layer):
    """Integrates its input from ``t[0]`` to ``t[-1]``: ``dh/dt = dynamics(t, h)``.

    Args:
        dynamics: A Keras layer called as ``dynamics(t, h)`` that returns ``dh/dt``
            with the shape of ``h``; its ``build`` receives the state shape.
        t: Integration times: ``(t0, t1)`` or several increasing (or decreasing) times.
        return_sequences: Return the states at every time in ``t`` as
            ``[batch, len(t), ...]`` instead of the final state.
        augment_dim: Pad the state with this many zero channels on the last axis
            before integrating (augmented neural ODEs); the output keeps them.
        method, rtol, atol, options, adjoint, jit_compile: As for
            :func:`tfode.odeint`. The defaults are the paper's classification
            setting: VODE implicit Adams at rtol = atol = 1e-3 with the backsolve
            adjoint; ``adjoint="quadrature"`` or ``tfode.Quadrature(...)`` (with
            ``method="bdf"``, ``"lsoda"`` or ``"radau"``) for stiff dynamics. The
            adjoint is kept through ``.keras`` save and load.
        kinetic: Weight of the kinetic-energy regulariser: the per-sample integral of
            ``||f||^2`` is solved with the state and ``kinetic`` times its batch mean
            is added to the layer's losses when training.
        jacobian_norm: Weight of the Jacobian Frobenius regulariser (the Hutchinson
            estimate ``integral ||e^T df/dh||^2 dt`` with one Rademacher probe per
            solve), likewise.
        steer: STEER: when training, the end time is drawn uniformly from
            ``t[-1] +- steer`` (two integration times only).
        nfe_name: The block reports its function evaluations to any model it is in:
            ``{nfe_name}_f`` (forward NFE) and ``{nfe_name}_b`` (backward NFE, the
            adjoint pass), each the mean per batch over the epoch, in the progress
            bar, ``History`` and ``CSVLogger`` with no metric or callback to add.
            Evaluation and validation report their own forward NFE and a backward NFE
            of 0 (no gradient is computed there). Give each block of a model with
            several its own name; ``None`` turns the report off.
        **kwargs: Keras layer arguments (``name``, ``dtype``, ...).

    Attributes:
        stats: The :class:`tfode.SolveStats` of the latest call (NFE forward/backward).
    """

    def __init__(self, dynamics: keras.layers.Layer, t=(0.0, 1.0), *,
                 return_sequences: bool = False, augment_dim: int = 0, method: str = "adams",
                 rtol=1e-3, atol=1e-3, options: dict | None = None, jit_compile="auto",
                 adjoint="backsolve", kinetic: float = 0.0, jacobian_norm: float = 0.0,
                 steer: float = 0.0, nfe_name: str | None = "nfe", **kwargs):
        refuse_legacy_arguments({k: kwargs.pop(k) for k in list(kwargs) if k in _LEGACY},
                                "ODEBlock")
        global_dtype = keras.config.dtype_policy().compute_dtype
        if kwargs.get("dtype") is None and global_dtype in _SIXTEEN_BIT:
            kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        # The solver is a Python callback that XLA cannot compile: Keras then falls back
        # from jit_compile=True with a warning (Layer.__init__ sets this attribute).
        self.supports_jit = False
        _pin_precision(self)
        if not callable(dynamics):
            raise TypeError(f"dynamics must be a Keras layer called as dynamics(t, h); got "
                            f"{type(dynamics).__name__}.")
        times = np.asarray(t, dtype=np.float64).reshape(-1)
        if times.size < 2:
            raise ValueError(f"t needs at least a start and an end time; got {t!r}.")
        if int(augment_dim) < 0:
            raise ValueError(f"augment_dim must be >= 0; got {augment_dim!r}.")
        self.dynamics = dynamics
        self.t = tuple(float(x) for x in times)
        self.return_sequences = bool(return_sequences)
        self.augment_dim = int(augment_dim)
        self.method, self.rtol, self.atol = method, rtol, atol
        self.options = dict(options or {})
        self.jit_compile = jit_compile
        self.adjoint = adjoint if isinstance(adjoint, str) else as_adjoint(adjoint)
        for label, value in (("kinetic", kinetic), ("jacobian_norm", jacobian_norm),
                             ("steer", steer)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a non-negative number; got {value!r}.")
        if steer and (times.size != 2 or steer >= abs(times[1] - times[0])):
            raise ValueError(f"steer needs t = (t0, t1) with steer < |t1 - t0|; got t={t!r}, "
                             f"steer={steer!r}.")
        self.kinetic, self.jacobian_norm, self.steer = (float(kinetic), float(jacobian_norm),
                                                        float(steer))
        self._regularized = None
        self.stats = SolveStats(name=f"{self.name}_stats")
        _BLOCKS[self.name] = weakref.ref(self)
        self.nfe_name = nfe_name
        if nfe_name is not None:
            # Metrics held by a layer are a model's metrics too (Keras 3); their sums
            # are added to by the solves themselves, the backward one when the
            # gradient is computed, so each batch's pass is counted exactly once.
            self.nfe_metrics = [_PassMean(name=f"{nfe_name}_f"), _PassMean(name=f"{nfe_name}_b")]
            for part, metric in zip(("forward", "backward"), self.nfe_metrics):
                self.stats.accumulate(part, _unwrap(metric.total), _unwrap(metric.count))

    def _state_shape(self, input_shape):
        shape = list(input_shape)
        if self.augment_dim:
            shape[-1] = None if shape[-1] is None else shape[-1] + self.augment_dim
        return tuple(shape)

    def build(self, input_shape):
        if isinstance(self.dynamics, keras.layers.Layer):
            _pin_precision(self.dynamics)
            if not self.dynamics.built:
                self.dynamics.build(self._state_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        state = self._state_shape(input_shape)
        if self.return_sequences:
            return (state[0], len(self.t)) + tuple(state[1:])
        return state

    def call(self, inputs, training=None):
        if _tfx.in_save_context():
            raise RuntimeError(SAVEDMODEL_MESSAGE)
        h = tf.cast(inputs, self.compute_dtype)
        if self.augment_dim:
            pad = [[0, 0]] * (h.shape.rank - 1) + [[0, self.augment_dim]]
            h = tf.pad(h, pad)
        t = tf.constant(self.t, tf.float64)
        if self.steer and training:
            t1 = t[1] + tf.random.uniform([], -self.steer, self.steer, dtype=tf.float64)
            t = tf.stack([t[0], t1])
        solver = {k: getattr(self, k) for k in _ODE_ARGS}
        if (self.kinetic or self.jacobian_norm) and training:
            if self._regularized is None:
                self._regularized = RegularizedDynamics(
                    self.dynamics, h.shape[1:], bool(self.kinetic), bool(self.jacobian_norm))
            reg = self._regularized
            states = _with_notes_in_message(odeint, reg, reg.initial_state(h), t,
                                            stats=self.stats, **solver)
            ys, values = reg.split(states)
            penalty = 0.0
            for name, weight in (("kinetic", self.kinetic), ("jacobian", self.jacobian_norm)):
                if name in values:
                    penalty += weight * tf.reduce_mean(values[name][-1])
            self.add_loss(penalty)
        else:
            ys = _with_notes_in_message(odeint, self.dynamics, h, t, stats=self.stats,
                                        **solver)
        if not self.return_sequences:
            return ys[-1]
        perm = [1, 0] + list(range(2, ys.shape.rank))
        return tf.transpose(ys, perm)

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        if save_type == "savedmodel":
            raise RuntimeError(SAVEDMODEL_MESSAGE)
        return super()._trackable_children(save_type, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            dynamics=keras.saving.serialize_keras_object(self.dynamics), t=list(self.t),
            return_sequences=self.return_sequences, augment_dim=self.augment_dim,
            kinetic=self.kinetic, jacobian_norm=self.jacobian_norm, steer=self.steer,
            nfe_name=self.nfe_name, **{k: getattr(self, k) for k in _ODE_ARGS})
        if isinstance(self.adjoint, Adjoint):
            config["adjoint"] = self.adjoint.get_config()
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["dynamics"] = keras.saving.deserialize_keras_object(config["dynamics"])
        legacy = {k: config.pop(k) for k in list(config) if k in _LEGACY}
        if isinstance(config.get("adjoint"), dict):
            config["adjoint"] = as_adjoint(config["adjoint"])
        elif (any(legacy.get(k) is not None for k in
                  ("adjoint_method", "adjoint_rtol", "adjoint_atol", "adjoint_options"))
              or legacy.get("restart") is False or legacy.get("seminorm")):
            # A block saved by an earlier release, with the backsolve adjoint's settings
            # as separate arguments.
            config["adjoint"] = Backsolve(
                method=legacy.get("adjoint_method"), rtol=legacy.get("adjoint_rtol"),
                atol=legacy.get("adjoint_atol"), options=legacy.get("adjoint_options"),
                restart=legacy.get("restart", True), seminorm=legacy.get("seminorm", False))
        return cls(**config)


def _with_notes_in_message(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an error carrying notes (tfode's note on the dynamics'
    calling convention) is raised again with them in its message, which Keras keeps
    when it re-raises an error from ``call`` (it drops the notes)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        notes = getattr(exc, "__notes__", None)
        if not notes:
            raise
        try:
            again = type(exc)("\n".join([str(exc), *notes]))
        except Exception:  # noqa: BLE001 - a type that takes other arguments: as it was
            raise exc from None
        raise again from exc


def _state_shape_of(layer, input_shape):
    """The state shape a dynamics layer is built with; refuses the time's shape, which
    Keras's automatic build would pass (it builds on the first call argument)."""
    if input_shape is None or len(input_shape) == 0:
        raise ValueError(
            f"{type(layer).__name__} is called as layer(t, x) and must be built on the state "
            f"shape: call layer.build(x.shape) first (ODEBlock does this); got {input_shape!r}.")
    return tuple(input_shape)


def _time_channel(t, x):
    """``t`` broadcast to ``x``'s shape with one channel on the last axis."""
    shape = tf.concat([tf.shape(x)[:-1], [1]], 0)
    return tf.fill(shape, tf.cast(t, x.dtype))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConcatConv2D(keras.layers.Layer):
    """A 2-D convolution whose input gets time as an extra channel (channels last):
    ``conv(concat([x, t]))``, as the reference code's ConcatConv2d.

    Call it as ``layer(t, x)``. Arguments are those of ``keras.layers.Conv2D``.
    """

    def __init__(self, filters: int, kernel_size=3, strides=1, padding="same",
                 use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.padding, self.use_bias = padding, use_bias
        self.conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                                        use_bias=use_bias, dtype=self.dtype_policy)

    def build(self, input_shape):
        input_shape = _state_shape_of(self, input_shape)
        self.conv.build(input_shape[:-1] + (input_shape[-1] + 1,))
        self.built = True

    def call(self, t, x):
        return self.conv(tf.concat([x, _time_channel(t, x)], -1))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(tuple(input_shape[:-1]) + (input_shape[-1] + 1,))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias)
        return config


def group_norm(channels: int, dtype=None) -> keras.layers.GroupNormalization:
    """GroupNorm with ``min(32, channels)`` groups, the reference code's norm."""
    return keras.layers.GroupNormalization(groups=min(32, channels), epsilon=1e-5, dtype=dtype)


@tf.function(jit_compile=True, autograph=False)
def _xla_group_norm(x, gamma, beta, groups: int, epsilon: float, relu: bool):
    channels = x.shape[-1]
    per_group = [1, 1, groups, channels // groups]
    grouped = tf.reshape(x, [tf.shape(x)[0], -1, groups, channels // groups])
    mean, var = tf.nn.moments(grouped, axes=[1, 3], keepdims=True)
    scale = tf.math.rsqrt(var + epsilon) * tf.reshape(gamma, per_group)
    out = tf.reshape(grouped * scale + (tf.reshape(beta, per_group) - mean * scale), tf.shape(x))
    return tf.nn.relu(out) if relu else out


def _group_norm(layer: keras.layers.GroupNormalization, x, relu: bool = False):
    """``layer(x)`` (then ReLU) as one XLA cluster, whether or not the caller is
    XLA-compiled: on a CPU, TensorFlow's unfused GroupNorm cost 3x the XLA one (3.4 ms
    against 1.2 ms at 128 x 7 x 7 x 64), while its oneDNN convolutions beat XLA's, so
    the ODE function runs fastest with only its norms compiled."""
    gamma = tf.cast(tf.convert_to_tensor(layer.gamma), x.dtype)
    beta = tf.cast(tf.convert_to_tensor(layer.beta), x.dtype)
    return _xla_group_norm(x, gamma, beta, int(layer.groups), float(layer.epsilon), relu)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvODEFunc(keras.layers.Layer):
    """The paper's MNIST ODE function: GroupNorm, ReLU, ConcatConv2D(3x3), GroupNorm,
    ReLU, ConcatConv2D(3x3), GroupNorm; the number of channels is kept."""

    def __init__(self, channels: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        dt = self.dtype_policy
        self.norm1, self.norm2, self.norm3 = (group_norm(channels, dt) for _ in range(3))
        self.conv1 = ConcatConv2D(channels, 3, dtype=dt)
        self.conv2 = ConcatConv2D(channels, 3, dtype=dt)

    def build(self, input_shape):
        input_shape = _state_shape_of(self, input_shape)
        for layer in (self.norm1, self.conv1, self.norm2, self.conv2, self.norm3):
            layer.build(input_shape)
        self.built = True

    def call(self, t, x):
        out = self.conv1(t, _group_norm(self.norm1, x, relu=True))
        out = self.conv2(t, _group_norm(self.norm2, out, relu=True))
        return _group_norm(self.norm3, out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConcatMLP(keras.layers.Layer):
    """An MLP dynamics on vectors with time concatenated to the input of every layer:
    ``Dense(concat([h, t]))`` through ``hidden`` units, then back to the state size."""

    def __init__(self, hidden=(64,), activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.layers_ = [keras.layers.Dense(h, activation=activation, dtype=self.dtype_policy)
                        for h in self.hidden]
        self.out = None

    def build(self, input_shape):
        input_shape = _state_shape_of(self, input_shape)
        width = input_shape[-1]
        size = width
        for layer in self.layers_:
            layer.build(tuple(input_shape[:-1]) + (size + 1,))
            size = layer.units
        self.out = keras.layers.Dense(width, dtype=self.dtype_policy)
        self.out.build(tuple(input_shape[:-1]) + (size + 1,))
        self.built = True

    def call(self, t, h):
        for layer in [*self.layers_, self.out]:
            h = layer(tf.concat([h, _time_channel(t, h)], -1))
        return h

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden=list(self.hidden), activation=self.activation)
        return config


def _block(block):
    if isinstance(block, ODEBlock):
        return block
    ref = _BLOCKS.get(block)
    if ref is None or ref() is None:
        raise ValueError(f"No live ODEBlock named {block!r}.")
    return ref()


class _PassMean(keras.metrics.Metric):
    """The mean evaluations per pass of a solve: the sums are added to by
    :class:`tfode.SolveStats` as the passes run; Keras resets them per epoch and per
    evaluation."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, *args, **kwargs):
        pass  # updated by the solves themselves

    def result(self):
        return self.total / tf.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NFE(keras.metrics.Metric):
    """Function evaluations of an :class:`ODEBlock` per batch, averaged over the epoch.

    Every :class:`ODEBlock` reports ``nfe_f`` and ``nfe_b`` by itself; this metric is
    for naming the figures in ``model.compile(metrics=[NFE(block, "forward",
    name=...)])``. The backward count is the adjoint pass of the same batch (Keras
    updates metrics after the gradient step); in evaluation it is not updated.
    """

    def __init__(self, block, part: str = "forward", name: str | None = None, **kwargs):
        if part not in ("forward", "backward"):
            raise ValueError(f"part must be 'forward' or 'backward'; got {part!r}.")
        super().__init__(name=name or ("nfe_f" if part == "forward" else "nfe_b"), **kwargs)
        self._block_name = block if isinstance(block, str) else block.name
        self._block = block if isinstance(block, ODEBlock) else None
        self.part = part
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true=None, y_pred=None, sample_weight=None):
        block = self._block or _block(self._block_name)
        value = getattr(block.stats, f"nfe_{self.part}")
        self.total.assign_add(tf.cast(value, self.dtype))
        self.count.assign_add(tf.ones((), self.dtype))

    def result(self):
        return self.total / tf.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"block": self._block_name, "part": self.part, "name": self.name}


class NFELogger(keras.callbacks.Callback):
    """Records an :class:`ODEBlock`'s NFE-F and NFE-B per training batch and their
    epoch means, as the paper reports them (Figure 3d: NFE against epoch).

    With ``csv_path`` every batch is also appended to that CSV file (epoch, batch,
    nfe_forward, nfe_backward), which survives an interrupted and resumed run.

    The epoch means are kept in ``self.epochs`` and the per-batch values in
    ``self.batches``; the epoch logs already carry the block's own ``nfe_f`` and
    ``nfe_b`` (see ``ODEBlock(nfe_name=...)``), so nothing is added to them.
    """

    def __init__(self, block: ODEBlock, csv_path: str | None = None):
        super().__init__()
        self.block = block
        self.csv_path = csv_path
        self.batches: list[dict] = []
        self.epochs: list[dict] = []
        self._current: list[tuple[int, int]] = []
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current = []
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        stats = self.block.stats
        f, b = int(stats.nfe_forward.numpy()), int(stats.nfe_backward.numpy())
        self._current.append((f, b))
        row = {"epoch": self._epoch, "batch": batch, "nfe_forward": f, "nfe_backward": b}
        self.batches.append(row)
        if self.csv_path:  # appended, so that a resumed run keeps the earlier rows
            new = not os.path.exists(self.csv_path)
            with open(self.csv_path, "a", encoding="utf-8") as fh:
                if new:
                    fh.write("epoch,batch,nfe_forward,nfe_backward\n")
                fh.write(f"{self._epoch},{batch},{f},{b}\n")

    def on_epoch_end(self, epoch, logs=None):
        if not self._current:
            return
        f, b = np.mean(self._current, axis=0)
        self.epochs.append({"epoch": epoch, "nfe_forward": float(f), "nfe_backward": float(b)})
