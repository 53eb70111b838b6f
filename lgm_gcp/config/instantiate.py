"""Hydra's ``instantiate`` without the wrapper exception: a constructor's own error (a missing dataset
folder, an invalid option) reaches the user as its one-line message, not as "Error in call to target"."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as _instantiate


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return _instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        if e.__cause__ is not None:
            raise e.__cause__ from None
        raise
