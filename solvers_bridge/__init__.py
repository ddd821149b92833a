"""solvers_bridge: SciPy's ODE solvers with the paper's adjoint, on NumPy callbacks.

Framework-free (NumPy and SciPy only): the TensorFlow frontend (:mod:`tfode`) and
the autograd frontend (:mod:`solvers_bridge.autograd_ode`) both sit on it.

Public surface:
    solve: integrate at requested times with a registered method.
    adjoint: integrate the augmented adjoint ODE backward (Algorithm 1 / App. C, D).
    dense_solve, DenseSolution: the same solve keeping every step's interpolant.
    solve_to_event: integrate until an event, located on the dense output.
    quadrature_adjoint, interpolating_adjoint, checkpointed_adjoint,
        checkpoint_grid: the dense adjoints for stiff dynamics (dense forward
        solution; the adjoint alone backward with the parameter gradients by
        Gauss quadrature, or with them; or re-solved from checkpoints).
    METHODS, get_method, Method: the method registry (one integrator per name,
        each with its capabilities).
    BlockLayout, block_layout: block-diagonal (per-sample) Jacobians as banded or
        sparse matrices.
    SolveInfo, AdjointResult: diagnostics and gradients.
    SolverError, NestedSolveError: failures.
"""

from solvers_bridge._adjoint import AdjointResult, adjoint, default_adjoint_method
from solvers_bridge._banded import BlockLayout, block_layout
from solvers_bridge._dense import DenseSolution
from solvers_bridge._errors import NestedSolveError, SolverError
from solvers_bridge._info import SolveInfo
from solvers_bridge._methods import (
    DEFAULT_MAX_FD_JACOBIAN_SIZE,
    DEFAULT_MAX_STEPS,
    METHODS,
    Method,
    check_error_control,
    check_option,
    get_method,
)
from solvers_bridge._quadrature import (
    checkpoint_grid,
    checkpointed_adjoint,
    interpolating_adjoint,
    quadrature_adjoint,
)
from solvers_bridge._solve import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    check_times,
    dense_solve,
    solve,
    solve_to_event,
)

__all__ = [
    "AdjointResult",
    "BlockLayout",
    "DEFAULT_ATOL",
    "DEFAULT_MAX_FD_JACOBIAN_SIZE",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_RTOL",
    "DenseSolution",
    "METHODS",
    "Method",
    "NestedSolveError",
    "SolveInfo",
    "SolverError",
    "adjoint",
    "block_layout",
    "check_error_control",
    "check_option",
    "check_times",
    "checkpoint_grid",
    "checkpointed_adjoint",
    "default_adjoint_method",
    "dense_solve",
    "get_method",
    "interpolating_adjoint",
    "quadrature_adjoint",
    "solve",
    "solve_to_event",
]
