"""Typed records: the part of `dataclasses` contextd uses, without generating code at import.

Why not `dataclasses`: `@dataclass` writes `__init__`, `__repr__`, `__eq__`, `__hash__` and,
when frozen, `__setattr__`/`__delattr__` as source text and compiles them, for every class,
whenever the module is imported; it also imports `inspect` (and with it `ast`, `dis`,
`tokenize`). For contextd's 39 record classes that was about 25 ms of every boot, a quarter
of the boot-path budget (issue 8, bench/RESULTS.md). A run creates a few dozen records, so
doing the same work generically at call time costs microseconds instead.

Semantics follow dataclasses where contextd relies on them: fields are the class's
annotations in order (a base record's fields come first); `field(default=...,
default_factory=..., repr=False, compare=False)`; `__post_init__`; equality on the compared
fields and the exact class; frozen records refuse assignment and hash like a tuple of
their compared fields; `repr=False` marks a secret (see `logs.add_secrets_of`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Type, TypeVar, overload

if TYPE_CHECKING:
    # For type checkers only (typing_extensions is not a runtime dependency): mypy then
    # sees each record's constructor, fields in order, as it would a dataclass's.
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda function: function

_MISSING: Any = object()
_T = TypeVar("_T")


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    __slots__ = ("compare", "default", "default_factory", "name", "repr")

    def __init__(self, default: Any = _MISSING, default_factory: Any = _MISSING,
                 repr: bool = True, compare: bool = True):   # `repr`: dataclasses' name
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("a field cannot have both a default and a default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is _MISSING


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING, repr: bool = True,
          compare: bool = True) -> Any:   # the same keywords as dataclasses.field
    return Field(default, default_factory, repr, compare)


def fields(value: Any) -> Tuple[Field, ...]:
    """The fields of a record class or instance; () for anything else."""
    return getattr(value, "__record_fields__", ())


@overload
def record(cls: Type[_T]) -> Type[_T]: ...


@overload
def record(*, frozen: bool = False) -> Callable[[Type[_T]], Type[_T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: Optional[type] = None, *, frozen: bool = False) -> Any:
    """Class decorator: `@record` or `@record(frozen=True)`."""
    def wrap(klass: type) -> type:
        return _make(klass, frozen)
    return wrap if cls is None else wrap(cls)


def _make(cls: type, frozen: bool) -> type:
    inherited: Dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, "__record_fields__", ()):
            inherited[f.name] = f
    # The class's own annotations, not its bases' (those come through their fields); no
    # typing_extensions.get_annotations: it is not a runtime dependency.
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for name in own:
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        inherited[name] = f
        # As with dataclasses, a plain default stays a class attribute; a Field does not.
        if isinstance(value, Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    all_fields = tuple(inherited.values())
    seen_default = False
    for f in all_fields:
        if f.required and seen_default:
            raise TypeError("%s: field %r without a default follows one with a default"
                            % (cls.__name__, f.name))
        seen_default = seen_default or not f.required
    cls.__record_fields__ = all_fields   # type: ignore[attr-defined]
    cls.__record_names__ = frozenset(f.name for f in all_fields)   # type: ignore[attr-defined]
    cls.__init__ = _init                 # type: ignore[misc]
    cls.__repr__ = _repr                 # type: ignore[assignment]
    cls.__eq__ = _eq                     # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _refuse_set    # type: ignore[assignment]
        cls.__delattr__ = _refuse_del    # type: ignore[assignment]
        cls.__hash__ = _hash             # type: ignore[assignment]
    else:
        cls.__hash__ = None   # type: ignore[assignment,method-assign]  # mutable: unhashable
    return cls


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    all_fields = cls.__record_fields__
    if len(args) > len(all_fields):
        raise TypeError("%s() takes %d positional arguments but %d were given"
                        % (cls.__name__, len(all_fields), len(args)))
    put = object.__setattr__
    for index, f in enumerate(all_fields):
        if index < len(args):
            if f.name in kwargs:
                raise TypeError("%s() got multiple values for argument %r"
                                % (cls.__name__, f.name))
            value = args[index]
        elif f.name in kwargs:
            value = kwargs[f.name]
        elif f.default is not _MISSING:
            value = f.default
        elif f.default_factory is not _MISSING:
            value = f.default_factory()
        else:
            raise TypeError("%s() missing required argument %r" % (cls.__name__, f.name))
        put(self, f.name, value)
    unknown = [name for name in kwargs if name not in cls.__record_names__]
    if unknown:
        raise TypeError("%s() got an unexpected keyword argument %r"
                        % (cls.__name__, unknown[0]))
    post: Optional[Callable[[], None]] = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _repr(self: Any) -> str:
    shown = ", ".join("%s=%r" % (f.name, getattr(self, f.name))
                      for f in type(self).__record_fields__ if f.repr)
    return "%s(%s)" % (type(self).__qualname__, shown)


def _compared(self: Any) -> Tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in type(self).__record_fields__ if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _refuse_set(self: Any, name: str, value: Any) -> None:
    raise FrozenRecordError("cannot assign to field %r of frozen %s"
                            % (name, type(self).__name__))


def _refuse_del(self: Any, name: str) -> None:
    raise FrozenRecordError("cannot delete field %r of frozen %s" % (name, type(self).__name__))
