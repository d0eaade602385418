"""Griffe extensions for the API reference: the docstrings in src/ as Griffe cannot read alone.

**Frozen records.** ``hardexec._record.frozen`` builds a class's ``__init__`` at import time,
from its annotated class attributes, as ``@dataclass(frozen=True)`` does. Griffe reads the
source without importing it and knows only the standard ``dataclasses`` module, so it would see
no parameters, and every ``Args:`` entry of a record's docstring would warn "does not appear in
the function signature" (a failure under ``mkdocs build --strict``). The first extension gives
each ``@frozen`` class the ``__init__`` that ``_record._make_init`` makes: its annotated fields
in order, positional or keyword, with their defaults, leaving out ``field(init=False)``.

**Sphinx roles.** Docstrings name other objects as ``:class:`Policy```, ``:meth:`Runner.stream```
or ``:mod:`.spec```, which Markdown would show as they are typed. Each becomes the name in code
type, linked to that object's entry where the API reference has one (the name is resolved as
Python would resolve it in the docstring's scope; ``~`` shows the last part only); a name the
API reference does not document (the standard library, a private helper) stays plain code.

Loaded by mkdocs.yml (the python handler's ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

FROZEN = "hardexec._record.frozen"
FIELD = "hardexec._record.field"


def _is_frozen(cls: griffe.Class) -> bool:
    return any(
        isinstance(decorator.value, griffe.Expr) and decorator.value.canonical_path == FROZEN
        for decorator in cls.decorators
    )


def _field_arguments(attribute: griffe.Attribute) -> dict[str, Any] | None:
    """The keyword arguments of ``field(...)`` when the attribute's value is one, else None."""
    value = attribute.value
    if isinstance(value, griffe.ExprCall) and value.canonical_path == FIELD:
        return {argument.name: argument.value for argument in value.arguments}
    return None


def _parameters(cls: griffe.Class) -> list[griffe.Parameter]:
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for member in cls.members.values():
        # A field is an annotated class attribute (annotations keep the order of the source).
        if member.is_alias or not member.is_attribute or member.annotation is None:
            continue
        if "property" in member.labels:
            continue
        arguments = _field_arguments(member)
        if arguments is None:
            default = member.value
        elif str(arguments.get("init", "True")) == "False":
            continue  # set in __post_init__, not a parameter
        elif "default_factory" in arguments:
            default = griffe.ExprCall(function=arguments["default_factory"], arguments=[])
        else:
            default = arguments.get("default")
        parameters.append(
            griffe.Parameter(
                member.name,
                annotation=member.annotation,
                kind=griffe.ParameterKind.positional_or_keyword,
                default=default,
                docstring=member.docstring,
            )
        )
    return parameters


def _visit(obj: griffe.Module | griffe.Class) -> None:
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_class:
            if _is_frozen(member) and "__init__" not in member.members:
                init = griffe.Function(
                    "__init__",
                    lineno=member.lineno,
                    endlineno=member.lineno,
                    parent=member,
                    parameters=griffe.Parameters(*_parameters(member)),
                    returns="None",
                )
                member.set_member("__init__", init)
            _visit(member)
        elif member.is_module:
            _visit(member)


class FrozenRecords(griffe.Extension):
    """Gives every ``@frozen`` class of a loaded package its generated ``__init__``."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Runs once the package's whole object tree is loaded, with its names resolved.

        Args:
            pkg: The package just loaded.
            **kwargs: What Griffe passes besides (its loader), unused.
        """
        _visit(pkg)


ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _target(obj: griffe.Object, name: str) -> str | None:
    """The full path ``name`` means in ``obj``'s docstring, or None when it cannot be told."""
    if name.startswith("hardexec."):
        return name
    if name.startswith("."):  # relative to the package, as in an import
        module = obj.module
        base = module.path if module.is_init_module else module.parent.path
        up = len(name) - len(name.lstrip("."))
        for _ in range(up - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{name.lstrip('.')}"
    first, _, rest = name.partition(".")
    try:
        path = obj.resolve(first)
    except griffe.NameResolutionError:
        return None
    if not path.startswith("hardexec"):
        return None  # an import from elsewhere (subprocess, asyncio)
    return f"{path}.{rest}" if rest else path


def _link_roles(obj: griffe.Object) -> None:
    docstring = obj.docstring
    if docstring is not None and ":" in docstring.value:

        def replace(match: re.Match[str]) -> str:
            short, name = match.groups()
            shown = name.lstrip(".").rpartition(".")[2] if short else name
            target = _target(obj, name.lstrip("~"))
            if target is None:
                return f"`{shown}`"
            # optional: a target the API reference does not render is shown unlinked, not an error
            return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'

        docstring.value = ROLE.sub(replace, docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _link_roles(member)


class SphinxRoles(griffe.Extension):
    """Turns the Sphinx roles in every docstring of a loaded package into reference links."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Runs once the package's whole object tree is loaded, with its names resolved.

        Args:
            pkg: The package just loaded.
            **kwargs: What Griffe passes besides (its loader), unused.
        """
        _link_roles(pkg)
