"""Every private TensorFlow and Keras interface tfode relies on, named in one place.

Checked on TensorFlow 2.21 and Keras 3.15. Each has a public fallback or a test that
fails first when a release moves it (``tests/test_tfode_odeint.py``,
``tests/test_layers.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Callable

from tensorflow.python.eager import context as _context
from tensorflow.python.eager import record as _record
from tensorflow.python.framework.ops import EagerTensor as _EagerTensor
from tensorflow.python.ops import control_flow_util as _control_flow_util
from tensorflow.python.saved_model import save_context as _save_context

TF_CHECKED = "2.21"
KERAS_CHECKED = "3.15"


def tf_started() -> bool:
    """Whether TensorFlow's runtime has started (thread settings are fixed from then on)."""
    return _context.context()._context_handle is not None


def stop_recording():
    """A context in which no gradient tape records (the solver's callbacks run inside
    the forward op; their evaluations must not be taped)."""
    return _record.stop_recording()


def should_record_backprop(tensors) -> bool:
    """Whether an active gradient tape watches any of the (eager) ``tensors``."""
    return _record.should_record_backprop(tensors)


def in_xla_context() -> bool:
    """Whether the graph being built (or one around it) is XLA-compiled, as inside
    ``tf.function(jit_compile=True)``."""
    import tensorflow as tf

    return bool(_control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def is_eager_tensor(t) -> bool:
    """Whether ``t`` is an eager tensor (a value, even where a graph captures it)."""
    return isinstance(t, _EagerTensor)


def in_save_context() -> bool:
    """Whether a SavedModel export is tracing (tfode layers refuse it)."""
    return _save_context.in_save_context()


def flat_caller(cf) -> Callable:
    """The cheapest call path of a concrete function: its atomic function's flat call
    (about 2x faster than ``cf(...)`` for small dynamics), else the public call."""
    atomic = getattr(cf, "_inference_function", None)
    captures = tuple(getattr(cf, "captured_inputs", ()))
    if atomic is not None and hasattr(atomic, "call_flat"):
        call = atomic.call_flat

        def flat(*args):
            return call(*args, *captures)[0]

        return flat
    return lambda *args: cf(*args)


def float64_converter() -> Callable:
    """``convert(value)``: a float64 eager tensor on the current device from a NumPy
    array or a Python number, by the constructor ``tf.constant`` ends in, without the
    Python layers above it (about 20 us of the 25 us a conversion cost per call, the
    largest overhead of a small evaluation) and without its defensive copy: the
    tensor may share the array's memory. Only for arrays nobody writes while the
    tensor lives: the bridge hands every callback a fresh copy of the solver's state
    (``solvers_bridge._callbacks``). Falls back to ``tf.constant``."""
    import tensorflow as tf

    ctx = _context.context()
    enum = tf.float64.as_datatype_enum
    try:
        ctx.ensure_initialized()
        _EagerTensor(0.0, ctx.device_name, enum)
    except Exception:  # noqa: BLE001 - a release moved it: the public path
        return lambda value: tf.constant(value, tf.float64)

    def convert(value):
        return _EagerTensor(value, ctx.device_name, enum)

    return convert


def sublayers(layer):
    """A Keras layer and all its nested layers (Keras's own walk)."""
    return layer._flatten_layers(include_self=True)


#: Files whose frames a warning skips to reach the user's line: tfode itself,
#: TensorFlow, Keras, and the modules AutoGraph generates.
_LIBRARY_DIRS = tuple(
    os.path.dirname(spec.origin) + os.sep
    for spec in map(importlib.util.find_spec, ("tfode", "tensorflow", "keras"))
    if spec is not None and spec.origin)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warns with the location of the first frame outside tfode, TensorFlow, Keras and
    AutoGraph's generated code: the user's line, however deep the call came from."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith(_LIBRARY_DIRS) or "__autograph_generated" in name
                or name.startswith("<frozen")):
            break
        frame = frame.f_back
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    registry = frame.f_globals.setdefault("__warningregistry__", {})
    filename = frame.f_code.co_filename
    # The globals let the warning show the source line of a module's file; for code
    # without one (``python -c``, an interactive prompt) their loader raises instead.
    warnings.warn_explicit(message, category, filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"), registry=registry,
                           module_globals=frame.f_globals if os.path.isfile(filename) else None)
