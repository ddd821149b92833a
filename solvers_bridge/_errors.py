"""Exceptions raised by the solver bridge."""

from __future__ import annotations


class SolverError(RuntimeError):
    """An ODE solver failed; its partial result is attached.

    Attributes:
        method: The registry name of the method that failed.
        t: The time the solver had reached when it stopped.
        step: The last step size the solver reported, or ``None`` if unknown.
        solver_message: The solver's own message.
        info: The :class:`~solvers_bridge.SolveInfo` of the failed solve.
        ys: The states at the output times that were reached before the failure
            (the first ``len(ys)`` requested times), so that nothing is lost.
    """

    def __init__(self, message: str, *, method: str = "", t: float | None = None,
                 step: float | None = None, solver_message: str = "", info=None, ys=None):
        super().__init__(message)
        self.method = method
        self.t = t
        self.step = step
        self.solver_message = solver_message
        self.info = info
        self.ys = ys


class NestedSolveError(SolverError):
    """A solve was started inside a callback of a solve of the same integrator.

    ODEPACK's LSODA, VODE and the Dormand-Prince codes keep per-integrator state
    that a nested solve of the same integrator corrupts (LSODA silently returns a
    wrong answer), so the bridge refuses it.
    """
