"""Hydra's ``instantiate`` without the wrapper exception.

A constructor's own user error (a missing dataset folder, an invalid option) reaches the user as its
one-line message; a ``_target_`` that cannot be imported, or that does not take a key the config
gives it, is a ``ConfigError`` naming it; any other exception from a constructor is a bug and keeps
its traceback, with a note naming the target."""

from __future__ import annotations

import importlib
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as _instantiate

from lgm_gcp.errors import ConfigError, UserError


def locate(target: str, key: str = "") -> Any:
    """The object a dotted ``_target_`` path names, or a one-line ConfigError (``key`` names the group)."""
    parts = str(target).split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    where = f"{key}._target_" if key else "_target_"
    raise ConfigError(f"{where}={target} cannot be imported: no such module, class or function")


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    target = config.get("_target_") if hasattr(config, "get") else None
    if target is not None:
        locate(target)
    try:
        return _instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, TypeError) and ("keyword argument" in str(cause) or "positional argument" in str(cause)):
            # a key the class does not take, or one it needs
            raise ConfigError(f"cannot instantiate _target_={target}: {cause}") from None
        if cause is None:
            raise ConfigError(f"cannot instantiate _target_={target}: {str(e).splitlines()[0]}") from None
        if hasattr(cause, "add_note"):
            cause.add_note(f"while instantiating _target_={target}")
        raise cause from None
