"""handgrad's math: activations, losses, networks, optimizers, the fit loop, gradcheck;
and what is built on it: training runs (RunConfig, Run), sweeps of replicas trained in one
pass (Sweep, model.replicas) and trained models (TrainedModel).

Everything here is written against the Python array API standard and gets its namespace
from the arrays it is given, so one body of code runs on NumPy, CuPy and array-api-strict.
"""

from backends.errors import ConfigError, HandgradError
from model.config import RunConfig
from model.fit import DivergenceError, FitResult, evaluate, fit
from model.gradcheck import gradcheck, gradcheck_model
from model.mlp import MLP, logistic_regression, relu_neuron, single_neuron, two_layer
from model.optimizers import SGD, Adam, make_optimizer
from model.run import Run
from model.sweep import Sweep
from model.trained import TrainedModel

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "ConfigError",
    "DivergenceError",
    "FitResult",
    "HandgradError",
    "Run",
    "RunConfig",
    "Sweep",
    "TrainedModel",
    "evaluate",
    "fit",
    "gradcheck",
    "gradcheck_model",
    "logistic_regression",
    "make_optimizer",
    "relu_neuron",
    "single_neuron",
    "two_layer",
]
