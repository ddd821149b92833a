"""Every SciPy internal the bridge relies on, named in one place.

Checked on SciPy 1.17.1 (the C translations of ODEPACK LSODA, VODE and the
Dormand-Prince codes). ``scipy>=1.17`` is required; a later release that moves one
of these breaks here first, and ``tests/test_bridge_solve.py`` pins the counts they
give against the solvers' own.
"""

from __future__ import annotations

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
