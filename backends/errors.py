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

__all__ = ["ConfigError", "DeviceUnavailableError", "HandgradError", "about"]


class HandgradError(Exception):
    """Base class of every error handgrad raises for bad input."""

    def __init__(self, message: str, *, setting: str | None = None, suggestion=None):
        super().__init__(message)
        self.setting = setting
        self.suggestion = suggestion


class ConfigError(HandgradError, ValueError):
    """A setting has a value that cannot work (unknown name, out of range, ...)."""


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
