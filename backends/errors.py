"""The project's exceptions: one base class, :class:`HandgradError`, for every error that
bad input causes (a setting, a file, a device, data). Anything else raised from handgrad
is a bug.

Messages name the problem and the fix in the library's own terms. ``setting`` names the
setting to change (``"lr"``, ``"data"``, ``"device"``, a :class:`model.run.RunConfig`
field, ...) and ``suggestion`` an example value, so that a command-line tool can point at
its own flag without the library knowing about flags.
"""

from __future__ import annotations

import contextlib
import math
import numbers

__all__ = [
    "ConfigError",
    "DataError",
    "DeviceUnavailableError",
    "HandgradError",
    "about",
    "check_number",
]


class HandgradError(Exception):
    """Base class of every error handgrad raises for bad input."""

    def __init__(self, message: str, *, setting: str | None = None, suggestion=None):
        super().__init__(message)
        self.setting = setting
        self.suggestion = suggestion


DASK_REFUSED = (
    "dask arrays are lazy: every array call of a training step would add tasks to one "
    "graph, computed only at the epoch's read-back, and a small model's step is thousands "
    "of microsecond-sized tasks, so laziness costs much and saves nothing; handgrad does not "
    "take them: compute them first (.compute()) and train on device cpu, torch or jax"
)


class ConfigError(HandgradError, ValueError):
    """A setting has a value that cannot work (unknown name, out of range, ...)."""


class DataError(HandgradError, ValueError):
    """Data that cannot be trained on; the message says what and how to fix it."""


class DeviceUnavailableError(HandgradError, RuntimeError):
    """The requested device exists as a name but cannot be used on this machine."""


@contextlib.contextmanager
def about(setting: str):
    """Within the block, a HandgradError that names no setting is about ``setting`` (the
    file or value the block was given), so the error points the user at it."""
    try:
        yield
    except HandgradError as exc:
        exc.setting = exc.setting or setting
        raise


def check_number(
    name, value, *, integer=False, low=None, high=None, low_open=False, high_open=False
):
    """``value`` as a Python int (``integer``) or float if it is a finite number (NumPy
    scalars included; an integer when ``integer``) >= ``low`` (> when ``low_open``) and <=
    ``high`` (< when ``high_open``); a ConfigError naming ``name`` and the range otherwise."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)  # NumPy's too
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ConfigError(f"{name} must be {kind} (finite), got {value!r}", setting=name)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
        bounds += [f"{'<' if high_open else '<='} {high}"] if high is not None else []
        raise ConfigError(
            f"{name} must be {kind} {' and '.join(bounds)}, got {value!r}", setting=name
        )
    return int(value) if integer else float(value)
