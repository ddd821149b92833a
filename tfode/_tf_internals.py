"""Every private TensorFlow and Keras interface tfode relies on, named in one place.

Checked on TensorFlow 2.21 and Keras 3.15. Each has a public fallback or a test that
fails first when a release moves it (``tests/test_tfode_odeint.py``,
``tests/test_layers.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from tensorflow.python.eager import record as _record
from tensorflow.python.saved_model import save_context as _save_context

TF_CHECKED = "2.21"
KERAS_CHECKED = "3.15"


def stop_recording():
    """A context in which no gradient tape records (the solver's callbacks run inside
    the forward op; their evaluations must not be taped)."""
    return _record.stop_recording()


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


def sublayers(layer):
    """A Keras layer and all its nested layers (Keras's own walk)."""
    return layer._flatten_layers(include_self=True)
