"""Frozen records: what ``@dataclass(frozen=True)`` gives hardexec's configuration, made cheaply.

``hardexec run`` is a prefix to other commands, so its start-up is a feature: the issue that
set the target (at most twice ``python -c pass``) measured the standard ``dataclasses`` module
at about two thirds of it, because importing it imports ``inspect`` (and with it ``ast``,
``dis``, ``tokenize``, ``re``, ``enum``), and building each class runs more of it. This module
gives the same behaviour for the features hardexec uses, and nothing else:

- an ``__init__`` taking the fields in order (positional or keyword), with defaults and
  ``field(default_factory=…)``, then ``__post_init__``; ``field(init=False)`` fields are set there;
- immutability: assigning or deleting an attribute raises :class:`FrozenInstanceError`
  (an ``AttributeError``, as ``dataclasses.FrozenInstanceError`` is), except through
  ``object.__setattr__`` in ``__post_init__``, the usual idiom;
- ``__repr__``, ``__eq__`` and ``__hash__`` over the fields (``repr=False``, ``compare=False``
  leave one out; a ``__repr__`` the class defines itself is kept), ``__match_args__``;
- :func:`replace` and :func:`fields`, like their ``dataclasses`` namesakes, and
  ``copy.replace()`` (``__replace__``).

The ``dataclasses`` module's own functions (``dataclasses.replace``, ``asdict``, ``fields``,
``is_dataclass``) do not know these classes: use the methods the classes offer
(``Policy.with_security``, …) or this module's :func:`replace` and :func:`fields`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_kwargs):
        return lambda decorated: decorated


__all__ = ["Field", "FrozenInstanceError", "field", "fields", "frozen", "replace"]


class FrozenInstanceError(AttributeError):
    """Raised on an attempt to change a field of a frozen record."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field of a record: its name, default (or default factory) and roles."""

    __slots__ = ("compare", "default", "default_factory", "init", "name", "repr")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Any = MISSING,
        init: bool = True,
        repr: bool = True,
        compare: bool = True,
    ) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r})"


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    init: bool = True,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """A field with a default factory or without a role (``dataclasses.field``'s subset)."""
    return Field(default, default_factory, init, repr, compare)


def fields(record: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    try:
        return record.__record_fields__
    except AttributeError:
        raise TypeError(f"{record!r} is not a hardexec record") from None


def replace(record: T, **changes: Any) -> T:
    """A copy of ``record`` with ``changes`` applied, validated again (``dataclasses.replace``)."""
    values = {}
    for item in fields(record):
        if not item.init:
            if item.name in changes:
                raise ValueError(f"field {item.name} is set in __post_init__, not by replace()")
            continue
        values[item.name] = changes.pop(item.name, getattr(record, item.name))
    if changes:
        raise TypeError(f"{type(record).__name__} has no field {next(iter(changes))!r}")
    return type(record)(**values)


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen record of its annotated class attributes (see the module doc)."""
    found = []
    # Not inspect.get_annotations: importing inspect is the cost this module exists to avoid.
    # Every module using @frozen has `from __future__ import annotations`, so the class's own
    # dict holds its annotations as strings (on 3.14 as well).
    annotations = cls.__dict__.get("__annotations__")  # noqa: RUF063
    if annotations is None:  # a future CPython without them in the dict: ask the class
        annotations = cls.__annotations__
    for name in annotations:
        value = cls.__dict__.get(name, MISSING)
        item = value if isinstance(value, Field) else Field(default=value)
        item.name = name
        if isinstance(value, Field):
            if item.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, item.default)
        found.append(item)
    record_fields = tuple(found)
    cls.__record_fields__ = record_fields  # type: ignore[attr-defined]
    cls.__match_args__ = tuple(f.name for f in record_fields if f.init)  # type: ignore[attr-defined]
    cls.__init__ = _make_init(cls, record_fields)  # type: ignore[misc]
    cls.__setattr__ = _frozen_setattr  # type: ignore[assignment,method-assign]
    cls.__delattr__ = _frozen_delattr  # type: ignore[assignment,method-assign]
    shown = [f.name for f in record_fields if f.repr]
    compared = [f.name for f in record_fields if f.compare]

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({inner})"

    def key(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in compared)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return key(self) == key(other)

    def __hash__(self: Any) -> int:
        return hash(key(self))

    def __replace__(self: Any, **changes: Any) -> Any:  # copy.replace() (Python 3.13+)
        return replace(self, **changes)

    own_repr = "__repr__" in cls.__dict__  # a class may show itself its own way
    for method in (__repr__, __eq__, __hash__, __replace__):
        if method is __repr__ and own_repr:
            continue
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)
    return cls


def _make_init(cls: type, record_fields: tuple[Field, ...]) -> Callable[..., None]:
    """``__init__`` as source, compiled once per class: as fast as a hand-written one."""
    scope: dict[str, Any] = {"MISSING": MISSING, "set": object.__setattr__}
    params, body, seen_default = [], [], False
    for index, item in enumerate(record_fields):
        if not item.init:
            if item.default is not MISSING:
                scope[f"d{index}"] = item.default
                body.append(f"set(self, {item.name!r}, d{index})")
            continue
        if item.default_factory is not MISSING:
            scope[f"f{index}"] = item.default_factory
            params.append(f"{item.name}=MISSING")
            body.append(
                f"set(self, {item.name!r}, f{index}() if {item.name} is MISSING else {item.name})"
            )
            seen_default = True
            continue
        if item.default is not MISSING:
            scope[f"d{index}"] = item.default
            params.append(f"{item.name}=d{index}")
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__name__}: field {item.name} without a default follows one")
        else:
            params.append(item.name)
        body.append(f"set(self, {item.name!r}, {item.name})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    exec(source, scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
