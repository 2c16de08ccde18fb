"""Remember, per process, what the mistralai 1.12.x SDK would otherwise rebuild on every call.

The SDK is generated code (Speakeasy) and, measured with cProfile on a chat completion against the
simulator, spends about three quarters of its CPU (≈ 3 of 4 ms a call) redoing the same work:

- `utils.serializers.unmarshal` and `marshal_json` wrap the value in a throw-away pydantic model made
  with `create_model("Unmarshaller", body=(typ, ...))`: six new model classes per chat completion
  (the messages, four unset options, the response), each with its schema and validator compiled
  anew;
- `utils.queryparams`, `utils.url` and `utils.forms` call `typing.get_type_hints(cls)` on the request
  class, which re-evaluates every annotation;
- `mistralai.utils` and `mistralai.models` load their names lazily (PEP 562 `__getattr__`) but never
  keep what they loaded, so every `utils.x` / `models.X` in the SDK goes through
  `importlib.import_module` again.

Each of these is a pure function of the SDK's own, fixed types, so remembering the result changes no
request, response or error: the same wrapper class validates and serializes a value exactly as a
fresh one would. The caches hold one entry per SDK type used, so they stay small.

`install()` is called once when providers/mistral.py is imported. It checks that the SDK still has
the functions it replaces (1.12.x does) and otherwise leaves the SDK alone: slower, never different.
"""

from __future__ import annotations

import functools
import threading
import typing
from collections.abc import Callable
from types import ModuleType
from typing import Any

_installed = False
_install_lock = threading.Lock()


def install() -> bool:
    """Install the caches (idempotent). Returns whether they are in place."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        try:
            from mistralai import models as sdk_models
            from mistralai import utils as sdk_utils
            from mistralai.utils import forms, queryparams, serializers, url
        except ImportError:
            return False
        modules_with_hints = (queryparams, url, forms)
        lazy_modules = (sdk_utils, sdk_models)
        if not (
            callable(getattr(serializers, "create_model", None))
            and all(getattr(module, "get_type_hints", None) is typing.get_type_hints for module in modules_with_hints)
            and all(callable(module.__dict__.get("__getattr__")) for module in lazy_modules)
        ):
            return False  # not the SDK this was written for: leave it as it is
        serializers.create_model = _remembering_create_model(serializers.create_model)
        for module in modules_with_hints:
            module.get_type_hints = _type_hints  # type: ignore[attr-defined]
        for module in lazy_modules:
            _keep_lazy_imports(module)
        _installed = True
        return True


def _remembering_create_model(create_model: Callable[..., Any]) -> Callable[..., Any]:
    """`create_model` that returns the class it made before for the same name and fields."""
    made: dict[Any, Any] = {}

    def create_model_once(model_name: str, /, **fields: Any) -> Any:
        try:
            key = (model_name, tuple(sorted((name, _frozen(value)) for name, value in fields.items())))
            model = made.get(key)
        except TypeError:  # an unhashable field definition: build it every time, as the SDK does
            return create_model(model_name, **fields)
        if model is None:
            # Two threads may both build it the first time; either class is correct.
            model = made.setdefault(key, create_model(model_name, **fields))
        return model

    return create_model_once


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a field definition (the SDK passes its ConfigDict as a dict)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((key, _frozen(item)) for key, item in value.items())))
    return value


@functools.cache
def _class_type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_hints(obj: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """`typing.get_type_hints`, remembered for a class asked about without options (what the SDK
    does); a copy, so a caller that changes it cannot change the cache."""
    if args or kwargs or not isinstance(obj, type):
        return typing.get_type_hints(obj, *args, **kwargs)
    return dict(_class_type_hints(obj))


def _keep_lazy_imports(module: ModuleType) -> None:
    """Store each lazily loaded name in the module on first use, so later look-ups are plain
    attribute reads instead of an import_module call each."""
    load = module.__dict__["__getattr__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562's name)
        value = load(name)
        setattr(module, name, value)
        return value

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
