"""TensorFlow's inter-op thread pool and the solver's callbacks.

In a graph (``tf.function``, ``model.fit``) the solve runs inside a
``tf.numpy_function``, which holds one thread of TensorFlow's inter-op pool for the
whole solve, and the callbacks call compiled TensorFlow functions from there. A
function that XLA compiled runs in the calling thread; one that it did not compile
waits for a free inter-op thread. With a one-thread pool (a process limited to one CPU,
where TensorFlow's default is one thread, ``set_inter_op_parallelism_threads(1)`` or
``TF_NUM_INTEROP_THREADS=1``) none is ever free and the solve would wait forever. So:

- ``import tfode`` gives a one-CPU process two inter-op threads, where the user has
  set none and TensorFlow has not started yet (one extra thread, idle but for the
  nested calls);
- a solve that would wait anyway (the pool was fixed at one thread and the dynamics run
  without XLA) raises :class:`ThreadPoolError` at its start, naming both fixes.
"""

from __future__ import annotations

import contextlib
import os
import threading

import tensorflow as tf

from tfode._tf_internals import tf_started

_op = threading.local()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _env_threads() -> int:
    """``TF_NUM_INTEROP_THREADS``, which TensorFlow reads when the config sets none."""
    try:
        return max(0, int(os.environ.get("TF_NUM_INTEROP_THREADS", "0")))
    except ValueError:
        return 0


def ensure_two_inter_op_threads() -> bool:
    """Sets two inter-op threads where TensorFlow would start with one (one CPU, nothing
    set by the user in the config or ``TF_NUM_INTEROP_THREADS``) and has not started
    yet; returns whether it did."""
    if (tf.config.threading.get_inter_op_parallelism_threads() != 0 or _env_threads()
            or _cpus() != 1):
        return False
    if tf_started():
        return False
    tf.config.threading.set_inter_op_parallelism_threads(2)
    return True


def inter_op_threads() -> int:
    """The inter-op pool's size: as set in the config, else by ``TF_NUM_INTEROP_THREADS``,
    else TensorFlow's default (one per CPU)."""
    return (tf.config.threading.get_inter_op_parallelism_threads() or _env_threads()
            or _cpus())


@contextlib.contextmanager
def in_graph_op():
    """Marks this thread as running a solve inside a ``tf.numpy_function``."""
    before = getattr(_op, "active", False)
    _op.active = True
    try:
        yield
    finally:
        _op.active = before


class ThreadPoolError(RuntimeError):
    """A solve inside a graph (``tf.function``, ``model.fit``) that would wait forever:
    TensorFlow's inter-op pool has one thread, the solve's ``tf.numpy_function`` holds
    it, and callbacks that XLA did not compile need another. Raised at the solve's start;
    the message names the fixes (two inter-op threads, or ``jit_compile=True``)."""


def check_callbacks_can_run(jit: bool, jit_reason: str | None, what: str = "dynamics") -> None:
    """Raises :class:`ThreadPoolError` where these callbacks (``what``: the dynamics, or
    the Jacobian, which XLA never compiles), called from inside a ``tf.numpy_function``,
    would wait for the inter-op thread that the op itself holds."""
    if jit or not getattr(_op, "active", False) or inter_op_threads() != 1:
        return
    why = f" ({jit_reason})" if jit_reason else ""
    threads = ("call tf.config.threading.set_inter_op_parallelism_threads(2) (or more) at "
               "the start of the program, before any TensorFlow op runs (or set "
               "TF_NUM_INTEROP_THREADS=2)")
    if what == "dynamics":
        fix = (f"Fix it in one of two ways: {threads}; or pass jit_compile=True so that XLA "
               "compiles the dynamics (they then run in the solver's own thread).")
    else:
        fix = (f"Fix it: {threads}; or run the solve eagerly, or without "
               "options={'jacobian': ...}.")
    raise ThreadPoolError(
        "TensorFlow's inter-op thread pool has one thread, and the solve inside this "
        f"tf.function holds it while its {what}, which run without XLA{why}, would wait "
        f"for it: the solve would never finish. {fix}")
