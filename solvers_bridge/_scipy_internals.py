"""Every SciPy internal the bridge relies on, named in one place.

Checked on SciPy 1.17.1 (the C translations of ODEPACK LSODA, VODE and the
Dormand-Prince codes). ``scipy>=1.17`` is required; a later release that moves one
of these breaks here first, and ``tests/test_bridge_solve.py`` pins the counts they
give against the solvers' own.
"""

from __future__ import annotations

import threading

import numpy as np

SCIPY_CHECKED = "1.17.1"

# ODEPACK LSODA and VODE keep their statistics in the integer and real work arrays of
# ``scipy.integrate.ode(...)._integrator`` (``iwork``/``rwork``; 0-based indices of
# the Fortran IWORK(k)/RWORK(k) of the ODEPACK and VODE documentation).
IWORK_NSTEPS = 10  # IWORK(11) NST: steps taken so far
IWORK_NJEV = 12  # IWORK(13) NJE: Jacobian evaluations so far
IWORK_LSODA_METHOD = 18  # IWORK(19) MUSED (LSODA): 1 Adams, 2 BDF on the last step
RWORK_LAST_STEP = 10  # RWORK(11) HU: the step size last used
IWORK_LAST_ORDER = 13  # IWORK(14) NQU: the order last used
RWORK_NORDSIECK = 20  # RWORK(21...) YH: the Nordsieck history array, n x (order + 1),
#                       column-major

# DOPRI5 and DOP853 (``ode('dopri5' | 'dop853')``): IWORK(19) NACCPT, the steps
# accepted during the last ``integrate`` call (the codes restart at every call).
IWORK_DOPRI_ACCEPTED = 18


def integrator(r):
    """The integrator object behind a ``scipy.integrate.ode`` instance."""
    return r._integrator


def return_message(r, code: int) -> str:
    """The integrator's own text for its return ``code``."""
    return integrator(r).messages.get(code, f"return code {code}")


def vode_dense_output(r, n: int):
    """VODE's own interpolant after a step taken with ``integrate(step=True)``: its
    Nordsieck array as ``(h, order, yh)`` with ``y(t) = yh @ ((t - t_new) / h) **
    arange(order + 1)`` (what VODE's DVINDY evaluates). VODE rescales the array for a
    new step size only when the next step begins, so it is still in units of the
    step just taken (HU) and of its order (NQU); checked here: the interpolant gives
    the step's end state exactly and the previous step's state to round-off."""
    integ = integrator(r)
    order = int(integ.iwork[IWORK_LAST_ORDER])
    h = float(integ.rwork[RWORK_LAST_STEP])
    yh = integ.rwork[RWORK_NORDSIECK:RWORK_NORDSIECK + (order + 1) * n].reshape(
        (n, order + 1), order="F").copy()
    return h, order, yh


def lsoda_dense_output(solver):
    """The dense output of the last step of ``scipy.integrate.LSODA`` (the OdeSolver
    over ``ode('lsoda')``): its Nordsieck history array, order and step size, as
    ``(h, order, yh)`` with ``y(t) = yh @ ((t - t_new) / h) ** arange(order + 1)``."""
    piece = solver.dense_output()
    return piece.h, len(piece.p) - 1, piece.yh


def rk_dense_output(solver):
    """``(y_old, Q)`` of the last step of ``scipy.integrate.RK45``/``RK23``/``Radau``:
    RK: ``y = y_old + h Q @ [x, x^2, ...]``; Radau: ``y = y_old + Q @ [x, x^2, x^3]``,
    ``x = (t - t_old) / h``."""
    piece = solver.dense_output()
    return piece.y_old, piece.Q


# -- Reference leaks of SciPy 1.17.1's C wrappers --------------------------------------
#
# Measured with ``sys.getrefcount`` around each call of the integrator's ``runner``:
# ``lsoda_step`` (``ode('lsoda')``, and ``scipy.integrate.LSODA`` which drives it) keeps
# one reference to its ``y`` argument and to the ``rwork``/``iwork`` arrays on every
# call, so every solve leaves its work arrays (``n^2`` doubles in the stiff mode) and
# every step a copy of the state behind; the Dormand-Prince wrappers (``dopri5``,
# ``dop853``) keep one to the right-hand side and to the ``solout`` callback (a bound
# method holding the integrator and its work array). VODE and ``odeint`` leak nothing.
# A training loop would grow without bound (about 10 KiB per LSODA solve of a 32-value
# state). The bridge hands those arguments over as per-thread objects that live for
# the process (a pooled array per size, a trampoline per integrator), so the leaked
# references all land on the same few objects and memory stays flat.
#
# The pools are keyed by the operating-system thread (``threading.get_ident``), not kept
# in a ``threading.local``: TensorFlow runs ``tf.numpy_function`` callbacks on its own
# threads, and Python gives each such call a fresh thread state, so a thread-local pool
# would start empty on every call (and every solve would leak its work arrays again:
# 1.3 MB per LSODA solve of a 400-value state). Two solves that run at once are on two
# threads, so they never share a pooled object.

_pools: dict[int, dict] = {}
_pools_lock = threading.Lock()


def _thread_pool(kind: str) -> dict:
    """This thread's pool of ``kind`` (``arrays`` or ``trampolines``)."""
    ident = threading.get_ident()
    pools = _pools.get(ident)
    if pools is None:
        with _pools_lock:
            pools = _pools.setdefault(ident, {"arrays": {}, "trampolines": {}})
    return pools[kind]


class _Trampoline:
    """A persistent callable standing in for a per-solve one (see above)."""

    __slots__ = ("target",)

    def __init__(self):
        self.target = None

    def __call__(self, *args):
        return self.target(*args)


def _pooled(key, like: np.ndarray) -> np.ndarray:
    """A per-thread array for ``key`` and ``like``'s size and dtype, holding ``like``'s values."""
    pool = _thread_pool("arrays")
    key = (key, like.dtype.str, like.size)
    arr = pool.get(key)
    if arr is None:
        arr = pool[key] = np.empty_like(like)
    arr[...] = like
    return arr


def trampoline(role: str, target) -> _Trampoline:
    """The thread's persistent trampoline for ``role``, now calling ``target``."""
    pool = _thread_pool("trampolines")
    tramp = pool.get(role)
    if tramp is None:
        tramp = pool[role] = _Trampoline()
    tramp.target = target
    return tramp


def plug_leaks(r, name: str) -> None:
    """After ``r.set_initial_value`` (a ``scipy.integrate.ode`` with integrator
    ``name``): route the arguments the C wrapper leaks through persistent objects."""
    integ = integrator(r)
    if name == "lsoda":
        integ.rwork = integ.call_args[4] = _pooled("lsoda-rwork", integ.call_args[4])
        integ.iwork = integ.call_args[5] = _pooled("lsoda-iwork", integ.call_args[5])
        if "runner" not in integ.__dict__:
            run = type(integ).runner

            def runner(f, y0, *rest):
                return run(f, _pooled("lsoda-y", np.asarray(y0, dtype=np.float64)), *rest)

            integ.runner = runner
    elif name in ("dopri5", "dop853"):
        integ.call_args[2] = trampoline(name + "-solout", integ.call_args[2])


def release(r, name: str) -> None:
    """After the solve: the trampolines let go of this solve's callables."""
    if name in ("dopri5", "dop853"):
        trampoline(name + "-solout", None)
        trampoline(name + "-f", None)


def ivp_lsoda_ode(solver):
    """The ``scipy.integrate.ode`` instance that ``scipy.integrate.LSODA`` drives."""
    return solver._lsoda_solver
