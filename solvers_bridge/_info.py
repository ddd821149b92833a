"""Diagnostics returned with every solve."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class SolveInfo:
    """Statistics and status of one solve (or of one adjoint pass).

    Attributes:
        method: Registry name of the method that ran.
        nfev: Calls of the right-hand side, counted at the callback. This equals
            the solver's own count (checked by the tests).
        njev: Jacobian evaluations the solver reported (user-supplied or
            finite-difference Jacobians alike; 0 for explicit methods).
        nsteps: Accepted steps.
        nswitches: LSODA only: number of output intervals in which LSODA changed
            between its non-stiff (Adams) and stiff (BDF) methods. LSODA exposes
            its method only when it returns, so this is a lower bound on the
            switches. 0 for the other methods.
        stiff: Whether a stiff method took steps: always for ``bdf`` and ``radau``;
            for LSODA, whether it reported its stiff (BDF) method at any output time
            (like ``nswitches``, a lower bound).
        last_step: The last step size taken (``None`` if the solver keeps none).
        t_reached: The time the solver reached.
        success: Whether the solve reached the last requested time.
        status: 0 on success, negative on failure (the solver's own code).
        message: The solver's own message, or "success".
        nintervals: Number of separate solves that were summed into this record
            (1 for a forward solve; the number of output intervals for an adjoint).
    """

    method: str
    nfev: int = 0
    njev: int = 0
    nsteps: int = 0
    nswitches: int = 0
    stiff: bool = False
    last_step: float | None = None
    t_reached: float | None = None
    success: bool = True
    status: int = 0
    message: str = "success"
    nintervals: int = 1

    def add(self, other: SolveInfo) -> None:
        """Accumulates ``other`` (a later interval of the same pass) into this record."""
        self.nfev += other.nfev
        self.njev += other.njev
        self.nsteps += other.nsteps
        self.nswitches += other.nswitches
        self.stiff = self.stiff or other.stiff
        self.last_step = other.last_step
        self.t_reached = other.t_reached
        self.success = self.success and other.success
        if other.status != 0:
            self.status = other.status
            self.message = other.message
        self.nintervals += other.nintervals

    def as_dict(self) -> dict:
        """Returns the record as a plain dictionary (for JSON)."""
        return dataclasses.asdict(self)
