"""mkdocs hooks: the API reference, one page per module, from one list in mkdocs.yml.

``extra.api_reference`` in mkdocs.yml names the modules that have a reference page, in nav
order; adding a module is adding its line there. ``extra.api_reference_when_present`` names
modules that get their page once their source exists in ``src/`` (modules being written), so
the site builds before and after they land. Each page is generated (nothing under docs/ to keep
in step): the module, rendered by mkdocstrings from its docstrings.

A name a package re-exports from a module that has a page of its own (``hardexec.Runner`` is
``hardexec.runner.Runner``) is documented once, on that module's page; the package's page
lists it with a link there, so the API reference has one entry, and one anchor, per object.
Loaded by mkdocs.yml (``hooks:``); run through ``scripts/docs``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "src"
log = logging.getLogger("mkdocs.hooks.api_reference")

_modules: list[str] = []  # this build's reference modules, in nav order (set by on_config)


def _present(module: str) -> bool:
    """Whether ``module`` has a source file in src/ (a module or a package)."""
    path = SOURCES.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _page(module: str, modules: list[str]) -> str:
    """The Markdown of ``module``'s reference page."""
    package = griffe.load(module, search_paths=[str(SOURCES)], resolve_aliases=False)
    exports = [str(name) for name in package.exports or []]
    # A re-export from another module that has a page of its own is documented there.
    elsewhere: dict[str, tuple[str, str]] = {}
    for name in exports:
        member = package.members.get(name)
        if member is None or not member.is_alias:
            continue
        # The most specific page whose module holds the object, unless that is this page or
        # a package above it (``hardexec.runner`` keeps ``TaskFailed`` from ``hardexec.errors``).
        homes = [
            other
            for other in modules
            if member.target_path.startswith(other + ".")
            and not (module == other or module.startswith(other + "."))
        ]
        if homes:
            home = max(homes, key=len)
            elsewhere[name] = (home, f"{home}.{name}")
    lines = [f"::: {module}"]
    if exports and elsewhere:
        kept = [name for name in exports if name not in elsewhere]
        lines += ["    options:", f"      members: [{', '.join(kept)}]"]  # [] is none of them
    if elsewhere:
        lines += [
            "",
            f"## Also importable from `{module}`",
            "",
            "Documented with the module they come from:",
            "",
        ]
        lines += [
            f"- [`{name}`][{target}] ([`{home}`]({home}.md))"
            for name, (home, target) in elsewhere.items()
        ]
    return "\n".join(lines) + "\n"


def on_config(config: Any) -> Any:
    """Adds the API reference to the nav: the listed modules, then those already written."""
    extra = config.extra
    modules = list(extra.get("api_reference") or [])
    for module in modules:
        if not _present(module):
            raise PluginError(f"mkdocs.yml: extra.api_reference: {module} is not in src/")
    for module in extra.get("api_reference_when_present") or []:
        if _present(module):
            modules.append(module)
        else:
            log.info("API reference: %s is not in src/ yet, so it has no page", module)
    _modules[:] = modules
    config.nav.append({"API reference": [{m: f"reference/{m}.md"} for m in modules]})
    return config


def on_files(files: Files, config: Any) -> Files:
    """Adds each reference page, generated, to the site's files."""
    for module in _modules:
        content = _page(module, _modules)
        files.append(File.generated(config, f"reference/{module}.md", content=content))
    return files
