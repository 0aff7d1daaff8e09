"""`module:function` references (SPEC section 4): rewards, judges, simulated labelers.

Standard library only, so the web app (simulated labelers) and the ML code share it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any


class CallableLoadError(ValueError):
    """A `module:function` reference could not be turned into a callable."""


def load_callable(spec: str) -> Callable[..., Any]:
    """Import `module:function` (dots allowed on both sides) from sys.path plus the cwd."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name.strip() or not attr_path.strip():
        raise CallableLoadError(f"{spec!r} is not of the form module:function")
    cwd = os.getcwd()
    if cwd not in sys.path:
        # SPEC 4: "the module is imported from the Python path (the current directory
        # included)". Appended, not prepended: a folder in the current directory named like
        # an installed package (tensorboard, say) must not replace it for the whole run.
        sys.path.append(cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CallableLoadError(
                f"cannot import {module_name!r} for {spec!r}: no such module on the Python path "
                f"(the current directory {cwd} included)"
            ) from exc
        raise CallableLoadError(f"importing {module_name!r} for {spec!r} failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes one readable line
        raise CallableLoadError(
            f"importing {module_name!r} for {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise CallableLoadError(
                f"{spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise CallableLoadError(f"{spec!r} names a {type(obj).__name__}, not a callable")
    return obj
