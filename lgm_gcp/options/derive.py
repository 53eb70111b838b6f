"""An option's schema, derived from the signature of the class (or function) its YAML names in ``_target_``.

The signature is the one place an option's parameters are written: their Python types, their defaults, and
the ``Literal`` choices, ``Range``s and markers of ``lgm_gcp.options.fields``. ``schema_of`` turns it into the
dataclass Hydra merges each YAML onto, so a typo'd key or a wrong type fails while composing, and
``validate`` checks the ranges and choices it carries in its fields' metadata. A class whose ``__init__``
takes ``**kwargs`` passes them to its base, whose parameters join (timm's and torchvision's habit).

Parameters the builder passes at the call site (``in_channels`` of a head, ``num_classes`` of a loss,
``model`` of an optimizer) are no config fields: ``lgm_gcp.options.groups.CALL_SITE`` names them per group.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Dict, List, Literal, Optional, Union

from omegaconf import MISSING

from lgm_gcp.options.fields import BY_HEAD, OR_AUTO, RECIPE, RESUMABLE, Range

_SCALARS = (int, float, bool, str)


def _init_functions(target: Callable) -> list:
    """The functions whose parameters make ``target``'s: a class's ``__init__`` and, while each takes
    ``**kwargs``, its bases' ``__init__`` in method-resolution order."""
    if not inspect.isclass(target):
        return [target]
    return [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__ and c is not object]


def signature_parameters(target: Callable) -> Dict[str, tuple]:
    """name -> (inspect.Parameter, its annotation with ``Annotated`` extras) for every parameter a
    config can set, in signature order (a subclass's own first)."""
    found: Dict[str, tuple] = {}
    for fn in _init_functions(target):
        try:  # a dataclass's generated __init__ keeps its annotations as strings: the class resolves them
            hints = typing.get_type_hints(target if dataclasses.is_dataclass(target) else fn, include_extras=True)
        except (NameError, TypeError):  # an annotation that does not evaluate: its type is open
            hints = {}
        takes_kwargs = False
        for i, p in enumerate(inspect.signature(fn).parameters.values()):
            if i == 0 and inspect.isclass(target) and p.name == "self":
                continue
            if p.kind is p.VAR_KEYWORD:
                takes_kwargs = True
            elif p.kind is not p.VAR_POSITIONAL:
                found.setdefault(p.name, (_dataclass_default(target, p), hints.get(p.name, Any)))
        if not takes_kwargs:
            break
    return found


def _dataclass_default(target: Callable, p: inspect.Parameter) -> inspect.Parameter:
    """``p`` with a dataclass field's ``default_factory`` called: its generated __init__ shows a sentinel."""
    if dataclasses.is_dataclass(target):
        f = {f.name: f for f in dataclasses.fields(target)}.get(p.name)
        if f is not None and f.default_factory is not dataclasses.MISSING:
            return p.replace(default=f.default_factory())
    return p


def _unwrap(annotation: Any) -> tuple:
    """(the bare type, the ``Annotated`` extras)."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        inner, more = _unwrap(base)
        return inner, tuple(extras) + more
    return annotation, ()


def _config_type(tp: Any) -> tuple:
    """(the type OmegaConf checks, the choices of a ``Literal`` or None) for a Python annotation."""
    tp, _ = _unwrap(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:  # strings only: OmegaConf would turn a bool choice (trainer.amp: false) into "False"
        return (str if all(isinstance(a, str) for a in args) else Any), tuple(args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        nested = [a for a in rest if dataclasses.is_dataclass(a)]
        if nested:  # a dataclass or its fields as a mapping: the dataclass's schema
            return schema_of(nested[0]), None
        if len(rest) == 1 and len(args) == 2:
            inner, choices = _config_type(rest[0])
            return Optional[inner], choices
        return Any, None
    if tp in _SCALARS:
        return tp, None
    if dataclasses.is_dataclass(tp):
        return schema_of(tp), None
    if origin in (list, tuple, Sequence) or tp in (list, tuple, Sequence):
        item = _config_type(args[0])[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else Any
        return List[item if item in _SCALARS else Any], None
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return Dict[str, Any], None
    return Any, None


def _field(p: inspect.Parameter, annotation: Any) -> tuple:
    """(config type, dataclasses.field) of one parameter."""
    tp, choices = _config_type(annotation)
    extras = _unwrap(annotation)[1]
    ranges = [e for e in extras if isinstance(e, Range)]
    metadata: Dict[str, Any] = {"range": ranges[0]} if ranges else {}
    default = MISSING if p.default is inspect.Parameter.empty else p.default
    if RECIPE in extras or BY_HEAD in extras:
        tp, default = Any, "auto"
        if choices:
            choices = ("auto",) + choices
        elif ranges:
            metadata["auto"] = True
    elif OR_AUTO in extras:
        tp, metadata["auto"] = Any, True
    if choices:
        metadata["choices"] = choices
    if RESUMABLE in extras:
        metadata["resumable"] = True
    if default is None and typing.get_origin(tp) is not Union and tp is not Any:
        tp = Optional[tp]
    if dataclasses.is_dataclass(tp) and (default is MISSING or dataclasses.is_dataclass(default)):
        return tp, dataclasses.field(default_factory=tp, metadata=metadata)
    if isinstance(default, (list, tuple)):
        return tp, dataclasses.field(default_factory=lambda d=default: list(d), metadata=metadata)
    if isinstance(default, Mapping):  # e.g. MappingProxyType({}): a signature's immutable empty mapping
        return tp, dataclasses.field(default_factory=lambda d=default: dict(d), metadata=metadata)
    return tp, dataclasses.field(default=default, metadata=metadata)


def schema_name(target: Callable) -> str:
    name = target.__name__
    name = name if name[:1].isupper() else "".join(w.capitalize() for w in name.split("_"))
    return name if name.endswith("Config") else name + "Config"


def schema_of(target: Callable, call_site: Sequence[str] = (), partial: bool = False) -> type:
    """The dataclass of ``target``'s configurable parameters (all but ``call_site``), led by ``_target_``
    (and ``_partial_: true`` for an option the builder calls with the call-site arguments later). A
    dataclass target (the L-GM margin schedule, the trainer) gives a nested schema without ``_target_``.
    One class per target: Hydra merges a node only onto the very class its schema was stored as."""
    key = (target, tuple(call_site), partial)
    if key not in _SCHEMAS:
        _SCHEMAS[key] = _derive_schema(target, call_site, partial)
    return _SCHEMAS[key]


_SCHEMAS: Dict[tuple, type] = {}


def _derive_schema(target: Callable, call_site: Sequence[str], partial: bool) -> type:
    fields = []
    if not dataclasses.is_dataclass(target):
        fields.append(("_target_", str, dataclasses.field(default=MISSING)))
        if partial:
            fields.append(("_partial_", bool, dataclasses.field(default=True)))
    for name, (p, annotation) in signature_parameters(target).items():
        if name not in call_site:
            fields.append((name, *_field(p, annotation)))
    schema = dataclasses.make_dataclass(schema_name(target), fields)
    # pickled by reference: a parallel launcher (joblib, submitit) sends Hydra's ConfigStore to its jobs,
    # and a class pickled by value loses dataclasses.MISSING's identity in its fields (a list field's
    # default_factory then reads as a value: "_MISSING_TYPE is not a ListConfig")
    key = [f"{target.__module__}:{target.__qualname__}", list(call_site), partial]
    schema.__module__, schema.__qualname__ = __name__, _PICKLED + json.dumps(key).encode().hex()
    globals()[schema.__qualname__] = schema
    return schema


_PICKLED = "schema_"  # the prefix of a derived schema's name in this module, which encodes its key


def __getattr__(name: str) -> type:
    """A derived schema by the name it was pickled under, derived here if this process has not yet."""
    if not name.startswith(_PICKLED):
        raise AttributeError(name)
    path, call_site, partial = json.loads(bytes.fromhex(name[len(_PICKLED):]))
    module, qualname = path.split(":")
    target = functools.reduce(getattr, qualname.split("."), importlib.import_module(module))
    return schema_of(target, tuple(call_site), partial)


def recipe_defaults(target: Callable) -> Dict[str, Any]:
    """The ``RECIPE`` parameters of ``target`` and their signature defaults: what ``auto`` means where
    the recipe says nothing."""
    return {name: p.default for name, (p, annotation) in signature_parameters(target).items()
            if RECIPE in _unwrap(annotation)[1]}


def resolve_auto(cfg: Mapping[str, Any], recipe: Mapping[str, Any], target: Callable) -> dict:
    """``cfg`` with each ``RECIPE`` field that says ``auto`` set from ``recipe`` (the backbone's for a head
    or loss, the optimizer's for an LR schedule), else from ``target``'s signature default."""
    plain = recipe_defaults(target)
    return {key: recipe.get(key, plain[key]) if value == "auto" and key in plain else value
            for key, value in cfg.items()}
