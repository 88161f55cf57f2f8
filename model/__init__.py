"""handgrad's math: activations, losses, layers and networks, optimizers, the fit loop,
gradcheck; and what is built on it: training runs (RunConfig, Run, whose grid of settings
may train several networks as replicas in one pass) and trained models (TrainedModel).

Everything here is written against the Python array API standard and gets its namespace
from the arrays it is given, so one body of code runs on NumPy, CuPy, PyTorch, JAX and
array-api-strict.

The names below load on first use (but ``fit`` and ``gradcheck``, which submodules' names
would shadow):
``import model.activations`` (or ``from model import Dense``) loads the math it needs and
no run, file or plotting module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from model.fit import fit  # eager: the submodules of these names would shadow the functions
from model.gradcheck import gradcheck

_WHERE = {
    "ConfigError": "backends.errors",
    "DataError": "backends.errors",
    "HandgradError": "backends.errors",
    "Activation": "model.layers",
    "BatchNorm": "model.layers",
    "Dense": "model.layers",
    "Dropout": "model.layers",
    "LayerNorm": "model.layers",
    "Param": "model.layers",
    "Sequential": "model.network",
    "MLP": "model.mlp",
    "logistic_regression": "model.mlp",
    "relu_neuron": "model.mlp",
    "single_neuron": "model.mlp",
    "two_layer": "model.mlp",
    "SGD": "model.optimizers",
    "Adam": "model.optimizers",
    "make_optimizer": "model.optimizers",
    "LBFGS": "model.lbfgs",
    "Schedule": "model.schedules",
    "EarlyStopping": "model.schedules",
    "DivergenceError": "model.fit",
    "FitResult": "model.fit",
    "evaluate": "model.fit",
    "gradcheck_model": "model.gradcheck",
    "init_replicas": "model.replicas",
    "per_replica": "model.replicas",
    "RunConfig": "model.config",
    "Run": "model.run",
    "TrainedModel": "model.trained",
}

__all__ = [
    "LBFGS",
    "MLP",
    "SGD",
    "Activation",
    "Adam",
    "BatchNorm",
    "ConfigError",
    "DataError",
    "Dense",
    "DivergenceError",
    "Dropout",
    "EarlyStopping",
    "FitResult",
    "HandgradError",
    "LayerNorm",
    "Param",
    "Run",
    "RunConfig",
    "Schedule",
    "Sequential",
    "TrainedModel",
    "evaluate",
    "fit",
    "gradcheck",
    "gradcheck_model",
    "init_replicas",
    "logistic_regression",
    "make_optimizer",
    "per_replica",
    "relu_neuron",
    "single_neuron",
    "two_layer",
]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from backends.errors import ConfigError, DataError, HandgradError
    from model.config import RunConfig
    from model.fit import DivergenceError, FitResult, evaluate
    from model.gradcheck import gradcheck_model
    from model.layers import Activation, BatchNorm, Dense, Dropout, LayerNorm, Param
    from model.lbfgs import LBFGS
    from model.mlp import MLP, logistic_regression, relu_neuron, single_neuron, two_layer
    from model.network import Sequential
    from model.optimizers import SGD, Adam, make_optimizer
    from model.replicas import init_replicas, per_replica
    from model.run import Run
    from model.schedules import EarlyStopping, Schedule
    from model.trained import TrainedModel
