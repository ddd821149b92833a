"""tfode: neural ordinary differential equations in TensorFlow over SciPy's solvers.

A reproduction of "Neural Ordinary Differential Equations" (Chen et al., 2018) as
it was built: TensorFlow evaluates the dynamics and their vector-Jacobian
products, SciPy's ODEPACK/VODE solvers drive the integration, and the gradient
integrates the augmented adjoint ODE backward through the same solvers.

Public surface:
    odeint: the differentiable solve.
    odeint_event: integrate until an event, the event time differentiable.
    methods: every method it accepts, with what each supports.
    Backsolve, Interpolating, Quadrature, Checkpointed, Adjoint: how a gradient
        is computed (the adjoint's own method, tolerances and options).
    SolveStats: forward/backward evaluation counts as variables.
    numpy_callbacks: the NumPy callbacks the solvers get for a dynamics function.
    SolverError, NestedSolveError, SolveInfo: from :mod:`solvers_bridge`.
    layers: Keras 3 layers (ODEBlock, ConcatConv2D, ConvODEFunc, ConcatMLP, NFE).
    flows, latent: the continuous normalizing flow and the latent ODE models.

Importing tfode registers its Keras classes, so ``keras.models.load_model`` finds them.
"""

from solvers_bridge import NestedSolveError, SolveInfo, SolverError
from tfode._adjoints import Adjoint, Backsolve, Checkpointed, Interpolating, Quadrature
from tfode._compile import numpy_callbacks
from tfode._event import odeint_event
from tfode._odeint import methods, odeint
from tfode._stats import SolveStats
from tfode._threads import ThreadPoolError, ensure_two_inter_op_threads

# A one-CPU process gets two inter-op threads (the solve inside a graph holds one).
ensure_two_inter_op_threads()

__all__ = ["Adjoint", "Backsolve", "Checkpointed", "Interpolating", "NestedSolveError",
           "Quadrature", "SolveInfo", "SolveStats", "SolverError", "ThreadPoolError", "layers",
           "methods", "numpy_callbacks", "odeint", "odeint_event", "flows", "latent"]
__version__ = "0.1.0"


# The Keras layers and models register themselves for ``keras.models.load_model`` when
# their modules are imported, so ``import tfode`` imports them: a saved model loads
# after ``import tfode`` alone. Under another Keras backend they cannot work, and
# ``odeint`` does not need them: ``tfode.layers`` then raises its ImportError on use.
try:
    from tfode import flows, latent, layers
except ImportError as _error:
    _KERAS_ERROR = _error

    def __getattr__(name):
        if name in ("layers", "flows", "latent"):
            raise _KERAS_ERROR
        raise AttributeError(f"module 'tfode' has no attribute {name!r}")
