"""Build the OpenAPI schema of a predictor from its signature.

`cog build` bundles `.cog/openapi_schema.json`; when that file is missing the worker
calls `generate(...)` at startup to build the same document from the loaded predictor:
parameter types, `Input(...)` metadata, and the output type.

When the cog SDK is importable its own introspection (`cog._inspector`, `cog._adt`) gives
the field types, exactly as cog sees them; if cog is missing, or its inspector refuses the
signature (e.g. `Literal[...]`, an `Enum` class, a missing annotation), plain type hints
(`inspect.signature` + `typing.get_type_hints`) give the same shapes for everything cog
supports and a permissive schema for the rest.

Only the standard library and cog are imported.
"""

from __future__ import annotations

import ast
import collections.abc
import contextlib
import copy
import dataclasses
import enum
import inspect
import io
import os
import pathlib
import sys
import textwrap
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["generate"]

_MISSING = inspect.Parameter.empty

# ---------------------------------------------------------------------------
# cog, when importable
# ---------------------------------------------------------------------------


def _cog() -> Optional[Dict[str, Any]]:
    """The cog SDK pieces used here, or None when cog is not importable.

    Tests monkeypatch this to exercise the plain-type-hints path. cog is used only when
    something (the predictor) has already imported it: a predictor that never did cannot
    use its types, and importing it would cost the worker ~190 ms of start-up."""
    if "cog" not in sys.modules:
        return None
    try:
        import cog  # noqa: F401
        from cog import _adt, _inspector
        from cog import input as cog_input
        from cog import types as cog_types
    except Exception:  # cog missing, or broken: plain type hints only
        return None
    return {
        "adt": _adt,
        "inspector": _inspector,
        "FieldInfo": cog_input.FieldInfo,
        "types": cog_types,
        "streaming": getattr(cog, "streaming", None),
    }


def _cog_type(name: str) -> Any:
    """A class from cog.types (Path, File, Secret, ConcatenateIterator, ...) or None."""
    mod = sys.modules.get("cog.types")
    if mod is None:
        c = _cog()
        mod = c["types"] if c else None
    return getattr(mod, name, None) if mod is not None else None


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def _title(name: str) -> str:
    """`max_tokens` -> `Max Tokens` (pydantic's field title rule, as cog uses it)."""
    return name.replace("_", " ").title()


def _json_value(v: Any) -> Any:
    """A default or choice value as JSON (enums by value, paths and URLs as text)."""
    if isinstance(v, enum.Enum):
        return _json_value(v.value)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    get_secret = getattr(v, "get_secret_value", None)
    if callable(get_secret):
        return get_secret()
    if isinstance(v, (os.PathLike, pathlib.PurePath)):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _json_value(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return str(v)


def _unwrap_function(f: Any) -> Any:
    """The user's function behind a bound method / decorators (as cog's `_unwrap`)."""
    f = getattr(f, "__func__", f)
    seen = 0
    while seen < 64:
        seen += 1
        w = getattr(f, "__wrapped__", None)
        if w is not None and callable(w):
            f = getattr(w, "__func__", w)
            continue
        closure = getattr(f, "__closure__", None)
        if closure and _looks_like_wrapper(f):
            inner = []
            for c in closure:
                try:
                    contents = c.cell_contents
                except ValueError:  # empty cell
                    continue
                if inspect.isfunction(contents):
                    inner.append(contents)
            if len(inner) == 1:
                f = inner[0]
                continue
        break
    return f


def _looks_like_wrapper(f: Any) -> bool:
    """A decorator's inner function: takes *args and/or **kwargs (cog's `_unwrap` follows
    any closure; a run() that merely closes over a helper function is not a wrapper)."""
    try:
        ps = inspect.signature(f, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) for p in ps)


def _is_bound(method: Any) -> bool:
    return inspect.ismethod(method) and getattr(method, "__self__", None) is not None


def _resolve_method(instance_or_function: Any, method: Any) -> Any:
    if method is not None:
        return method
    if inspect.isfunction(instance_or_function) or inspect.ismethod(instance_or_function):
        return instance_or_function
    # the user's own run() or predict() (BaseRunner defines both as bridges)
    for cls in type(instance_or_function).__mro__:
        if cls.__module__.split(".")[0] == "cog" or cls is object:
            break
        for name in ("run", "predict"):
            if callable(cls.__dict__.get(name)):
                return getattr(instance_or_function, name)
    for name in ("run", "predict"):
        m = getattr(instance_or_function, name, None)
        if callable(m):
            return m
    if callable(instance_or_function):
        return instance_or_function
    raise ValueError(f"no run/predict method on {instance_or_function!r}")


def _type_hints(func: Any) -> Dict[str, Any]:
    """Resolved annotations (string annotations evaluated); {} entries skipped on failure."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:
        pass
    raw = dict(getattr(func, "__annotations__", {}) or {})
    glb = getattr(func, "__globals__", {}) or {}
    out = {}
    for k, v in raw.items():
        if isinstance(v, str):
            try:
                v = eval(v, dict(glb))  # noqa: S307 - the user's own annotation
            except Exception:
                continue
        out[k] = v
    return out


class _Param:
    """One parameter of the run/train method: name, annotation, raw default."""

    def __init__(self, name: str, order: int, annotation: Any, default: Any):
        self.name = name
        self.order = order
        self.annotation = annotation  # _MISSING when unannotated
        self.default = default  # _MISSING when absent


def _params(method: Any) -> Tuple[List[_Param], Any]:
    """Parameters (self excluded) and return annotation of a run/predict/train callable."""
    if not inspect.isroutine(method) and callable(method):
        method = method.__call__  # a callable object: its bound __call__
    bound = _is_bound(method)
    func = _unwrap_function(method)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        sig = inspect.signature(method)
    hints = _type_hints(func) if inspect.isfunction(func) else _type_hints(method)
    plist = list(sig.parameters.values())
    if bound and plist and plist[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        plist = plist[1:]  # self
    params = []
    order = 0
    for p in plist:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        ann = hints.get(p.name, p.annotation)
        if isinstance(ann, str):
            ann = _MISSING
        params.append(_Param(p.name, order, ann, p.default))
        order += 1
    ret = hints.get("return", sig.return_annotation)
    if isinstance(ret, str):
        ret = _MISSING
    return params, ret


# ---------------------------------------------------------------------------
# Input metadata (cog.Input(...) -> FieldInfo)
# ---------------------------------------------------------------------------


class _Meta:
    """What an Input(...) (or a raw default) says about a field."""

    __slots__ = (
        "has_default",
        "default",
        "description",
        "ge",
        "le",
        "min_length",
        "max_length",
        "regex",
        "choices",
        "deprecated",
    )

    def __init__(self) -> None:
        self.has_default = False
        self.default: Any = None
        self.description: Optional[str] = None
        self.ge: Any = None
        self.le: Any = None
        self.min_length: Optional[int] = None
        self.max_length: Optional[int] = None
        self.regex: Optional[str] = None
        self.choices: Optional[List[Any]] = None
        self.deprecated: Optional[bool] = None


def _is_field_info(v: Any, cog: Optional[Dict[str, Any]]) -> bool:
    if cog is not None and isinstance(v, cog["FieldInfo"]):
        return True
    # duck typing: cog's FieldInfo from another import, or a look-alike
    return type(v).__name__ == "FieldInfo" and all(
        hasattr(v, a) for a in ("default", "description", "ge", "le", "choices")
    )


def _field_default(v: Any) -> Tuple[bool, Any]:
    """(has_default, value) from a FieldInfo.default / raw default (None = no default)."""
    if isinstance(v, dataclasses.Field):
        if v.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            try:
                v = v.default_factory()  # type: ignore[misc]
            except Exception:
                return False, None
        elif v.default is not dataclasses.MISSING:
            v = v.default
        else:
            return False, None
    if v is None or v is _MISSING or v is Ellipsis:
        return False, None
    return True, v


def _meta(raw_default: Any, cog: Optional[Dict[str, Any]]) -> _Meta:
    m = _Meta()
    if raw_default is _MISSING:
        return m
    if _is_field_info(raw_default, cog):
        fi = raw_default
        m.has_default, m.default = _field_default(getattr(fi, "default", None))
        m.description = getattr(fi, "description", None)
        m.ge = getattr(fi, "ge", None)
        m.le = getattr(fi, "le", None)
        m.min_length = getattr(fi, "min_length", None)
        m.max_length = getattr(fi, "max_length", None)
        m.regex = getattr(fi, "regex", None)
        ch = getattr(fi, "choices", None)
        m.choices = None if ch is None else [_json_value(c) for c in ch]
        m.deprecated = getattr(fi, "deprecated", None)
        return m
    m.has_default, m.default = _field_default(raw_default)
    return m


# ---------------------------------------------------------------------------
# Types -> JSON schema (plain type hints)
# ---------------------------------------------------------------------------

# What a type hint means for a field: its JSON schema (without title), whether None is
# allowed, whether it is a list (constraints then apply to the items), the JSON type of
# its scalar element, and enumerated values (Literal / Enum) if any.


class _FT:
    __slots__ = ("schema", "optional", "repeated", "elem", "choices")

    def __init__(
        self,
        schema: Dict[str, Any],
        optional: bool = False,
        repeated: bool = False,
        elem: Optional[str] = None,
        choices: Optional[List[Any]] = None,
    ):
        self.schema = schema
        self.optional = optional
        self.repeated = repeated
        self.elem = elem
        self.choices = choices


_OPAQUE_MARKER_NAME = "_OpaqueMarker"


def _is_opaque_meta(m: Any) -> bool:
    return type(m).__name__ == _OPAQUE_MARKER_NAME or repr(m) == "cog.Opaque"


def _strip_annotated(tp: Any) -> Tuple[Any, bool]:
    """(inner type, opaque?) for Annotated[...]; other types unchanged."""
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        if any(_is_opaque_meta(m) for m in args[1:]):
            return args[0], True
        tp = args[0]
    return tp, False


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_none(tp: Any) -> bool:
    return tp is None or tp is type(None)


def _literal_values(tp: Any) -> Optional[List[Any]]:
    if typing.get_origin(tp) is typing.Literal:
        vals: List[Any] = []
        for a in typing.get_args(tp):
            if typing.get_origin(a) is typing.Literal:  # nested Literal
                vals.extend(_literal_values(a) or [])
            else:
                vals.append(_json_value(a))
        return vals
    return None


def _json_type_of_values(vals: List[Any]) -> Optional[str]:
    kinds = set()
    for v in vals:
        if isinstance(v, bool):
            kinds.add("boolean")
        elif isinstance(v, int):
            kinds.add("integer")
        elif isinstance(v, float):
            kinds.add("number")
        elif isinstance(v, str):
            kinds.add("string")
        else:
            kinds.add("?")
    if kinds == {"integer", "number"}:
        return "number"
    return kinds.pop() if len(kinds) == 1 and "?" not in kinds else None


def _is_subclass(tp: Any, base: Any) -> bool:
    try:
        return base is not None and isinstance(tp, type) and issubclass(tp, base)
    except TypeError:
        return False


def _is_dict_like(tp: Any) -> bool:
    if tp is dict or typing.get_origin(tp) in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return True
    if tp in (typing.Dict, typing.Mapping):
        return True
    is_td = getattr(typing, "is_typeddict", None)
    try:
        return bool(is_td and is_td(tp))
    except Exception:
        return False


def _scalar(tp: Any) -> Optional[_FT]:
    """A non-container type: primitive, cog Path/File/Secret, Literal, Enum, object."""
    if tp is _MISSING:
        return _FT({})
    if tp is typing.Any or tp is object:
        return _FT({"type": "object"}, elem="object")
    if tp is bool:
        return _FT({"type": "boolean"}, elem="boolean")
    if tp is int:
        return _FT({"type": "integer"}, elem="integer")
    if tp is float:
        return _FT({"type": "number"}, elem="number")
    if tp is str:
        return _FT({"type": "string"}, elem="string")
    secret = _cog_type("Secret")
    if (secret is not None and _is_subclass(tp, secret)) or (
        isinstance(tp, type) and tp.__name__ == "Secret" and tp.__module__.startswith("cog")
    ):
        return _FT(
            {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
            elem="string",
        )
    cog_file = _cog_type("File")
    if (cog_file is not None and _is_subclass(tp, cog_file)) or tp is os.PathLike or _is_subclass(
        tp, os.PathLike
    ) or _is_subclass(tp, pathlib.PurePath):
        return _FT({"type": "string", "format": "uri"}, elem="string")
    lit = _literal_values(tp)
    if lit is not None:
        t = _json_type_of_values(lit)
        return _FT({"type": t} if t else {}, elem=t, choices=lit)
    if _is_subclass(tp, enum.Enum):
        vals = [_json_value(m.value) for m in tp]  # type: ignore[attr-defined]
        t = _json_type_of_values(vals)
        return _FT({"type": t} if t else {}, elem=t, choices=vals)
    if _is_dict_like(tp):
        return _FT({"type": "object"}, elem="object")
    if isinstance(tp, type) and (_is_subclass(tp, str)):
        return _FT({"type": "string"}, elem="string")
    if isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or hasattr(tp, "model_fields") or hasattr(tp, "__fields__")
    ):
        return _FT({"type": "object"}, elem="object")
    return None


def _field_type(tp: Any) -> _FT:
    """Plain-type-hints FieldType, shaped like cog's `FieldType.json_type()`."""
    tp, opaque = _strip_annotated(tp)
    if opaque:
        inner = _field_type(tp)
        obj: Dict[str, Any] = {"type": "object"}
        if inner.repeated:
            return _FT({"type": "array", "items": obj}, optional=inner.optional, repeated=True, elem="object")
        return _FT(obj, optional=inner.optional, elem="object")

    origin = typing.get_origin(tp)
    if _is_union(tp):
        args = typing.get_args(tp)
        has_none = any(_is_none(a) for a in args)
        rest = [a for a in args if not _is_none(a)]
        if len(rest) == 1:
            inner = _field_type(rest[0])
            inner.optional = inner.optional or has_none
            return inner
        # anyOf of the variants (cog: union of primitives / lists of primitives)
        variants = []
        for a in rest:
            v = _field_type(a)
            variants.append(v.schema)
        return _FT({"anyOf": variants}, optional=has_none)

    seq_origins = (
        list,
        tuple,
        set,
        frozenset,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Set,
        collections.abc.Iterable,
    )
    if tp in (list, tuple, set, frozenset, typing.List, typing.Sequence, typing.Set) or origin in seq_origins:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        elem_tp = args[0] if len(args) == 1 or (origin is tuple and args) else typing.Any
        elem_tp, elem_opaque = _strip_annotated(elem_tp)
        if elem_opaque:
            el = _FT({"type": "object"}, elem="object")
        else:
            el = _scalar(elem_tp)
            if el is None:
                el = _FT({}, elem=None)
        return _FT({"type": "array", "items": el.schema}, repeated=True, elem=el.elem, choices=el.choices)

    sc = _scalar(tp)
    if sc is not None:
        return sc
    return _FT({})  # unknown class: anything goes (cog would need a Coder for it)


def _object_fields_schema(tp: Any) -> Optional[Dict[str, Any]]:
    """cog BaseModel / dataclass / pydantic model output -> object schema (cog's shape)."""
    if not isinstance(tp, type):
        return None
    names: Optional[List[str]] = None
    if dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp)]
    elif isinstance(getattr(tp, "model_fields", None), dict):
        names = list(tp.model_fields)
    if names is None:
        return None
    hints = _type_hints(tp)
    props: Dict[str, Any] = {}
    required = []
    for n in names:
        ft = _field_type(hints.get(n, _MISSING))
        p = dict(ft.schema)
        if ft.optional:
            p["nullable"] = True
        else:
            required.append(n)
        p["title"] = _title(n)
        props[n] = p
    out: Dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def _output_schema_plain(tp: Any, title: str) -> Dict[str, Any]:
    """Plain-type-hints Output, shaped like cog's `OutputType.json_type()`."""
    out: Dict[str, Any] = {"title": title}
    if tp is _MISSING or tp is None or tp is type(None) or tp is typing.Any:
        return out
    tp, opaque = _strip_annotated(tp)
    if opaque:
        ft = _field_type(typing.Annotated[tp, _opaque_marker()])
        out.update(ft.schema)
        return out

    concat = tuple(c for c in (_cog_type("ConcatenateIterator"), _cog_type("AsyncConcatenateIterator")) if c)
    origin = typing.get_origin(tp)
    is_concat = tp in concat or origin in concat or (
        isinstance(origin or tp, type) and (origin or tp).__name__ in ("ConcatenateIterator", "AsyncConcatenateIterator")
    )
    iter_origins = (
        collections.abc.Iterator,
        collections.abc.AsyncIterator,
        collections.abc.Generator,
        collections.abc.AsyncGenerator,
        collections.abc.Iterable,
        collections.abc.AsyncIterable,
    )
    if is_concat or origin in iter_origins or tp in iter_origins:
        args = typing.get_args(tp)
        el = _field_type(args[0] if args else (str if is_concat else typing.Any))
        out.update({"type": "array", "items": el.schema, "x-cog-array-type": "iterator"})
        if is_concat:
            out["x-cog-array-display"] = "concatenate"
        return out

    obj = _object_fields_schema(tp)
    if obj is not None:
        out.update(obj)
        return out

    ft = _field_type(tp)
    out.update(ft.schema)
    return out


def _opaque_marker() -> Any:
    try:
        from cog import Opaque

        return Opaque
    except Exception:
        return type(_OPAQUE_MARKER_NAME, (), {})()


# ---------------------------------------------------------------------------
# cog's inspector
# ---------------------------------------------------------------------------


def _cog_info(method: Any, cog: Dict[str, Any]) -> Any:
    """cog's PredictorInfo for this callable (raises when cog refuses the signature)."""
    insp = cog["inspector"]
    if not inspect.isroutine(method) and callable(method):
        method = method.__call__
    func = _unwrap_function(method)
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    if module is not None and hasattr(insp, "_find_coders"):
        insp._find_coders(module)
    # cog prints a warning on stdout for `-> Any`; keep the worker's stdout clean
    with contextlib.redirect_stdout(io.StringIO()):
        return insp._create_predictor_info(
            getattr(func, "__module__", "") or "",
            getattr(func, "__qualname__", getattr(func, "__name__", "")),
            func,
            getattr(func, "__name__", "predict"),
            _is_bound(method),
        )


def _cog_field(input_field: Any, cog: Dict[str, Any]) -> _FT:
    adt = cog["adt"]
    ft = input_field.type
    rep = ft.repetition
    optional = rep in (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
    repeated = rep in (adt.Repetition.REPEATED, adt.Repetition.OPTIONAL_REPEATED)
    schema = copy.deepcopy(ft.json_type())
    if getattr(ft, "union_variants", None) is not None:
        schema.pop("nullable", None)  # added back below, with the others
        return _FT(schema, optional=optional)
    elem = ft.primitive.json_type().get("type")
    return _FT(schema, optional=optional, repeated=repeated, elem=elem)


# ---------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------


def _input_property(
    name: str, order: int, ft: _FT, meta: _Meta, enum_name: Optional[str], enums: Dict[str, Any]
) -> Tuple[Dict[str, Any], bool]:
    """(property schema, required?) for one input."""
    prop: Dict[str, Any] = {}
    choices = meta.choices if meta.choices is not None else ft.choices
    if choices is not None and enum_name is not None:
        etype = ft.elem or _json_type_of_values(choices)
        enum_schema: Dict[str, Any] = {"title": name, "description": "An enumeration.", "enum": list(choices)}
        if etype:
            enum_schema["type"] = etype
        enums[enum_name] = enum_schema
        ref = {"$ref": f"#/components/schemas/{enum_name}"}
        if ft.repeated:
            prop["title"] = _title(name)
            prop["type"] = "array"
            prop["items"] = ref
        else:
            prop["allOf"] = [ref]
    else:
        prop["title"] = _title(name)
        prop.update(copy.deepcopy(ft.schema))

    required = not meta.has_default and not ft.optional
    if ft.optional:
        prop["nullable"] = True
    if meta.description is not None:
        prop["description"] = meta.description
    if meta.has_default:
        prop["default"] = _json_value(meta.default)

    # constraints: on the value, or on each item of a list (cog checks each element)
    target = prop
    if ft.repeated and isinstance(prop.get("items"), dict) and "$ref" not in prop["items"]:
        target = prop["items"]
    if meta.ge is not None:
        target["minimum"] = meta.ge
    if meta.le is not None:
        target["maximum"] = meta.le
    if meta.min_length is not None:
        target["minLength"] = meta.min_length
    if meta.max_length is not None:
        target["maxLength"] = meta.max_length
    if meta.regex is not None:
        target["pattern"] = meta.regex
    if meta.deprecated:
        prop["deprecated"] = True
    prop["x-order"] = order
    return prop, required


def _components_for(
    method: Any, input_title: str, output_title: str, taken: set
) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(Input-like component, Output-like component, enum components) for one callable."""
    cog = _cog()
    params, ret = _params(method)

    info = None
    if cog is not None:
        try:
            info = _cog_info(method, cog)
        except Exception:
            info = None  # cog refuses this signature: plain type hints below

    properties: Dict[str, Any] = {}
    required: List[str] = []
    enums: Dict[str, Any] = {}
    for p in params:
        meta = _meta(p.default, cog)
        ft = None
        if info is not None and p.name in info.inputs:
            try:
                ft = _cog_field(info.inputs[p.name], cog)
                if info.inputs[p.name].choices is not None:
                    meta.choices = [_json_value(c) for c in info.inputs[p.name].choices]
            except Exception:
                ft = None
        if ft is None:
            ft = _field_type(p.annotation)
        enum_name = None
        if (meta.choices is not None) or (ft.choices is not None):
            enum_name = p.name
            if enum_name in taken:
                enum_name = f"{input_title}{_title(p.name).replace(' ', '')}"
                i = 2
                base = enum_name
                while enum_name in taken:
                    enum_name = f"{base}{i}"
                    i += 1
        prop, req = _input_property(p.name, p.order, ft, meta, enum_name, enums)
        properties[p.name] = prop
        if req:
            required.append(p.name)
    taken.update(enums)

    input_schema: Dict[str, Any] = {"title": input_title, "type": "object"}
    if required:
        input_schema["required"] = required
    input_schema["properties"] = properties

    output_schema = None
    if info is not None:
        try:
            output_schema = copy.deepcopy(info.output.json_type())
            output_schema["title"] = output_title
        except Exception:
            output_schema = None
    if output_schema is None:
        output_schema = _output_schema_plain(ret, output_title)
    return input_schema, output_schema, enums


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------


def _declares_streaming(method: Any) -> bool:
    """True when run/predict is decorated with `@cog.streaming` (or `@streaming`).

    cog 0.23's decorator returns the function unchanged (`cog build` finds it in the
    source), so the decorator list is read from the function's source; an attribute
    `__cog_streaming__` set by some other version of the decorator also counts."""
    for f in (method, getattr(method, "__func__", None), _unwrap_function(method)):
        if f is not None and getattr(f, "__cog_streaming__", False):
            return True
    func = _unwrap_function(method)
    try:
        # most sources never mention it: a plain read is ~100x cheaper than getsource
        with open(func.__code__.co_filename, "rb") as f:
            if b"streaming" not in f.read():
                return False
    except (AttributeError, OSError):
        pass
    try:
        src = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(src)
    except Exception:
        return False
    node = next(
        (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None
    )
    if node is None:
        return False
    glb = getattr(func, "__globals__", {}) or {}
    cog_streaming = (_cog() or {}).get("streaming")
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Name) and target.id in glb:
            obj = glb[target.id]
            if obj is cog_streaming and obj is not None:
                return True
            if target.id == "streaming" and getattr(obj, "__module__", "").split(".")[0] == "cog":
                return True
        elif isinstance(target, ast.Attribute) and target.attr == "streaming":
            base = target.value
            if isinstance(base, ast.Name):
                mod = glb.get(base.id)
                if mod is None or getattr(mod, "__name__", "").split(".")[0] == "cog":
                    return True
        elif isinstance(target, ast.Name) and target.id == "streaming":
            return True  # name not resolvable from the module: trust the name
    return False


# ---------------------------------------------------------------------------
# Fixed parts of the document (the shape cog's schemas have always had)
# ---------------------------------------------------------------------------


def _ref(name: str) -> Dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"description": "Successful Response", "content": _json_content(schema)}


_VALIDATION_ERROR_RESPONSE = {"description": "Validation Error", "content": _json_content(_ref("HTTPValidationError"))}
_PREFER = {"required": False, "schema": {"title": "Prefer", "type": "string"}, "name": "prefer", "in": "header"}


def _id_param(name: str, title: str) -> Dict[str, Any]:
    return {"required": True, "schema": {"title": title, "type": "string"}, "name": name, "in": "path"}


def _simple_get(summary: str, op: str, resp_title: str) -> Dict[str, Any]:
    return {"summary": summary, "operationId": op, "responses": {"200": _ok({"title": resp_title})}}


def _paths(has_train: bool, streaming: bool) -> Dict[str, Any]:
    predict_post: Dict[str, Any] = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "parameters": [dict(_PREFER)],
        "requestBody": {"content": _json_content(_ref("PredictionRequest"))},
        "responses": {"200": _ok(_ref("PredictionResponse")), "422": copy.deepcopy(_VALIDATION_ERROR_RESPONSE)},
    }
    if streaming:
        predict_post["x-cog-streaming"] = True
    paths: Dict[str, Any] = {
        "/": {"get": _simple_get("Root", "root__get", "Response Root  Get")},
        "/health-check": {
            "get": _simple_get("Healthcheck", "healthcheck_health_check_get", "Response Healthcheck Health Check Get")
        },
        "/predictions": {"post": predict_post},
        "/predictions/{prediction_id}": {
            "put": {
                "summary": "Predict Idempotent",
                "description": "Run a single prediction on the model (idempotent creation).",
                "operationId": "predict_idempotent_predictions__prediction_id__put",
                "parameters": [_id_param("prediction_id", "Prediction ID"), dict(_PREFER)],
                "requestBody": {
                    "content": _json_content({"title": "Prediction Request", "allOf": [_ref("PredictionRequest")]}),
                    "required": True,
                },
                "responses": {"200": _ok(_ref("PredictionResponse")), "422": copy.deepcopy(_VALIDATION_ERROR_RESPONSE)},
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "description": "Cancel a running prediction",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [_id_param("prediction_id", "Prediction ID")],
                "responses": {
                    "200": _ok({"title": "Response Cancel Predictions  Prediction Id  Cancel Post"}),
                    "422": copy.deepcopy(_VALIDATION_ERROR_RESPONSE),
                },
            }
        },
        "/shutdown": {
            "post": _simple_get("Start Shutdown", "start_shutdown_shutdown_post", "Response Start Shutdown Shutdown Post")
        },
    }
    if has_train:
        paths["/trainings"] = {
            "post": {
                "summary": "Train",
                "operationId": "train_trainings_post",
                "parameters": [dict(_PREFER)],
                "requestBody": {"content": _json_content(_ref("TrainingRequest"))},
                "responses": {"200": _ok(_ref("TrainingResponse")), "422": copy.deepcopy(_VALIDATION_ERROR_RESPONSE)},
            }
        }
        paths["/trainings/{training_id}"] = {
            "put": {
                "summary": "Train Idempotent",
                "operationId": "train_idempotent_trainings__training_id__put",
                "parameters": [_id_param("training_id", "Training ID"), dict(_PREFER)],
                "requestBody": {
                    "content": _json_content({"title": "Training Request", "allOf": [_ref("TrainingRequest")]}),
                    "required": True,
                },
                "responses": {"200": _ok(_ref("TrainingResponse")), "422": copy.deepcopy(_VALIDATION_ERROR_RESPONSE)},
            }
        }
        paths["/trainings/{training_id}/cancel"] = {
            "post": {
                "summary": "Cancel Training",
                "operationId": "cancel_training_trainings__training_id__cancel_post",
                "parameters": [_id_param("training_id", "Training ID")],
                "responses": {
                    "200": _ok({"title": "Response Cancel Training Trainings  Training Id  Cancel Post"}),
                    "422": copy.deepcopy(_VALIDATION_ERROR_RESPONSE),
                },
            }
        }
    return paths


def _request_schema(title: str, input_name: str) -> Dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": {
            "input": _ref(input_name),
            "id": {"title": "Id", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "context": {"title": "Context", "type": "object", "additionalProperties": {"type": "string"}},
            "output_file_prefix": {"title": "Output File Prefix", "type": "string"},
            "webhook": {"title": "Webhook", "maxLength": 65536, "minLength": 1, "type": "string", "format": "uri"},
            "webhook_events_filter": {
                "type": "array",
                "items": _ref("WebhookEvent"),
                "default": ["start", "output", "logs", "completed"],
            },
        },
    }


def _response_schema(title: str, input_name: str, output_name: str) -> Dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": {
            "input": _ref(input_name),
            "output": _ref(output_name),
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "logs": {"title": "Logs", "type": "string", "default": ""},
            "error": {"title": "Error", "type": "string"},
            "status": _ref("Status"),
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }


def _fixed_components() -> Dict[str, Any]:
    return {
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {"detail": {"title": "Detail", "type": "array", "items": _ref("ValidationError")}},
        },
        "ValidationError": {
            "title": "ValidationError",
            "required": ["loc", "msg", "type"],
            "type": "object",
            "properties": {
                "loc": {
                    "title": "Location",
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": {"title": "Message", "type": "string"},
                "type": {"title": "Error Type", "type": "string"},
            },
        },
        "Status": {
            "title": "Status",
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
            "description": "An enumeration.",
        },
        "WebhookEvent": {
            "title": "WebhookEvent",
            "enum": ["start", "output", "logs", "completed"],
            "type": "string",
            "description": "An enumeration.",
        },
    }


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def generate(
    instance_or_function: Any,
    method: Optional[Callable[..., Any]],
    train_method: Optional[Callable[..., Any]] = None,
    streaming: Optional[bool] = None,
) -> Dict[str, Any]:
    """The OpenAPI 3.0.2 document `cog build` would bundle for this predictor.

    `instance_or_function`: the loaded predictor (an instance of the user's class, or a
    plain function); `method`: the bound run/predict method (or the function itself; None
    = found on the instance); `train_method`: the bound train method / train function, or
    None (then no training routes or components); `streaming`: True/False forces
    `x-cog-streaming` on `POST /predictions`, None = detected from `@cog.streaming` on the
    method.
    """
    method = _resolve_method(instance_or_function, method)
    fixed = _fixed_components()
    reserved = set(fixed) | {
        "Input",
        "Output",
        "PredictionRequest",
        "PredictionResponse",
        "TrainingInput",
        "TrainingOutput",
        "TrainingRequest",
        "TrainingResponse",
    }

    schemas: Dict[str, Any] = {}
    taken = set(reserved)
    inp, out, enums = _components_for(method, "Input", "Output", taken)
    schemas["Input"] = inp
    schemas["Output"] = out
    schemas.update(enums)
    schemas["PredictionRequest"] = _request_schema("PredictionRequest", "Input")
    schemas["PredictionResponse"] = _response_schema("PredictionResponse", "Input", "Output")

    has_train = train_method is not None
    if has_train:
        tinp, tout, tenums = _components_for(train_method, "TrainingInput", "TrainingOutput", taken)
        schemas["TrainingInput"] = tinp
        schemas["TrainingOutput"] = tout
        schemas.update(tenums)
        schemas["TrainingRequest"] = _request_schema("TrainingRequest", "TrainingInput")
        schemas["TrainingResponse"] = _response_schema("TrainingResponse", "TrainingInput", "TrainingOutput")

    schemas.update(fixed)

    if streaming is None:
        try:
            streaming = _declares_streaming(method)
        except Exception:
            streaming = False

    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": _paths(has_train, bool(streaming)),
        "components": {"schemas": {k: schemas[k] for k in sorted(schemas)}},
    }
