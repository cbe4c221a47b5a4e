"""Write docs/api.md, the public API reference, from the docstrings of the public modules.

Usage::

    python docs/make_api.py            # rewrite docs/api.md
    python docs/make_api.py --check    # exit 1 if docs/api.md differs from what would be written

For every name in each module's ``__all__``: the signature, the first paragraph of the docstring
and its ``Args`` / ``Returns`` / ``Attributes`` / ``Raises`` sections (where the shapes are), the
``Example`` section, and one line per public method of a class. Constants are documented by the
``#:`` comment above their assignment in the defining module. ``tests/test_api_docs.py`` checks
that docs/api.md is up to date and that every public name has an example.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api.md"

#: The documented modules, in page order.
MODULES: tuple[str, ...] = (
    "modbalance",
    "modbalance.fusion",
    "modbalance.scores",
    "modbalance.interaction",
    "modbalance.presets",
    "modbalance.methods",
    "modbalance.encoders",
    "modbalance.data",
    "modbalance.train",
    "modbalance.metrics",
    "modbalance.probe",
    "modbalance.report",
)

SECTION = re.compile(r"^(Args|Arguments|Returns|Yields|Attributes|Raises|Example|Examples):\s*$")
KEPT_SECTIONS = ("Args", "Arguments", "Returns", "Yields", "Attributes", "Raises")
WIDTH = 100


def _own_doc(obj: Any) -> str | None:
    """The object's own docstring (not inherited), dedented, or None."""
    doc = obj.__doc__ if isinstance(obj, (type, ModuleType)) or callable(obj) else None
    if not isinstance(doc, str) or not doc.strip():
        return None
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + "("):
        return None  # the auto-generated dataclass signature, not documentation
    return inspect.cleandoc(doc)


def split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """``(prose outside the sections, {section name: body, dedented})``.

    A Google-style section runs from its ``Name:`` line to the next line that is back at the
    docstring's own indentation; prose after a section returns to the summary.
    """
    summary: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        match = SECTION.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
            continue
        if current is not None and line.strip() and not line[0].isspace():
            current = None
            summary.append("")
        (summary if current is None else current).append(line)
    bodies = {name: textwrap.dedent("\n".join(body)).strip("\n") for name, body in sections.items()}
    return re.sub(r"\n{3,}", "\n\n", "\n".join(summary)).strip(), bodies


ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def prose(text: str) -> str:
    """reST inline markup to Markdown: ``:func:`~a.b``` -> `b`, double backticks -> single."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        whole = match.group(0)
        if ":math:" in whole:
            return f"`{target}`"
        return f"`{target.rsplit('.', 1)[-1] if '`~' in whole else target}`"

    return re.sub(r"``([^`]+)``", r"`\1`", ROLE.sub(role, text))


def plain(text: str) -> str:
    """reST inline markup removed, for text blocks."""
    return prose(text).replace("`", "")


def has_example(obj: Any) -> bool:
    """True when the object's own docstring has an ``Example:`` section with at least one ``>>>``."""
    doc = _own_doc(obj)
    if doc is None:
        return False
    _, sections = split_docstring(doc)
    body = sections.get("Example", "") + sections.get("Examples", "")
    return ">>>" in body


def _annotation(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _default(value: Any) -> str:
    text = repr(value)
    if " at 0x" in text:  # object reprs with addresses would make the page change on every run
        text = f"<{type(value).__name__}>"
    return text


def signature(obj: Any, name: str, *, skip_self: bool = False) -> str | None:
    """``name(params) -> return``, one parameter per line when long; None when there is none."""
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if isinstance(obj, type) and target is object.__init__ and not sig.parameters:
        return f"{name}()"
    parts: list[str] = []
    star_done = False
    previous_kind = None
    params = list(sig.parameters.values())
    if skip_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for param in params:
        if param.kind is inspect.Parameter.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if previous_kind is inspect.Parameter.POSITIONAL_ONLY and param.kind is not inspect.Parameter.POSITIONAL_ONLY:
            parts.append("/")
        text = param.name
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            text, star_done = "*" + text, True
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            text = "**" + text
        annotation = _annotation(param.annotation)
        if annotation:
            text += f": {annotation}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {_default(param.default)}" if annotation else f"={_default(param.default)}"
        parts.append(text)
        previous_kind = param.kind
    returns = "" if isinstance(obj, type) else _annotation(sig.return_annotation)
    tail = f" -> {returns}" if returns else ""
    one_line = f"{name}({', '.join(parts)}){tail}"
    if len(one_line) <= WIDTH:
        return one_line
    body = "".join(f"    {part},\n" for part in parts)
    return f"{name}(\n{body}){tail}"


def constant_comment(module: ModuleType, name: str) -> str | None:
    """The ``#:`` comment above ``name``'s assignment, looked up where the package imports it from."""
    for source_module in _defining_modules(module, name):
        try:
            source = inspect.getsource(source_module)
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        pattern = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
        for index, line in enumerate(lines):
            if pattern.match(line):
                comment: list[str] = []
                cursor = index - 1
                while cursor >= 0 and lines[cursor].startswith("#:"):
                    comment.insert(0, lines[cursor][2:].strip())
                    cursor -= 1
                if comment:
                    return " ".join(comment)
    return None


def _defining_modules(module: ModuleType, name: str) -> list[ModuleType]:
    """``module`` itself, then the module its ``from X import name`` statement names."""
    found = [module]
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and any(alias.name == name for alias in node.names):
            found.append(importlib.import_module(node.module))
    return found


def _public_methods(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined on the class itself (not inherited from torch)."""
    methods = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        undocumented_override = _own_doc(value) is None and any(hasattr(base, attr) for base in cls.__mro__[1:])
        if undocumented_override:  # e.g. nn.Module.extra_repr: a hook, not API
            continue
        if isinstance(value, property) or inspect.isfunction(value):
            methods.append((attr, value))
    return methods


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    summary, _ = split_docstring(doc)
    return prose(summary.split("\n\n", 1)[0].replace("\n", " ").strip())


def _kind(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return "module"
    if isinstance(obj, type):
        if issubclass(obj, BaseException):
            return "exception"
        return "class"
    if callable(obj) and inspect.isroutine(obj):
        return "function"
    return "constant"


def _source_path(obj: Any) -> str | None:
    try:
        path = Path(inspect.getsourcefile(obj) or "")
    except TypeError:
        return None
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None


def render_name(module: ModuleType, name: str) -> list[str]:
    """The Markdown of one public name."""
    obj = getattr(module, name)
    qualified = f"{module.__name__}.{name}"
    kind = _kind(obj)
    out = [f"### `{qualified}`", ""]
    if kind == "module":
        out += [f"Module; see [`{obj.__name__}`](#{obj.__name__.replace('.', '')}).", ""]
        return out
    if kind == "constant":
        value = repr(obj)
        if len(value) > WIDTH or " at 0x" in value:
            value = f"<{type(obj).__name__}>"
        out += ["```text", f"{name} = {value}", "```", ""]
        comment = constant_comment(module, name)
        out += [prose(comment) if comment else "(undocumented constant)", ""]
        return out
    sig = signature(obj, name)
    prefix = {"class": "class ", "exception": "exception "}.get(kind, "")
    if sig:
        out += ["```text", prefix + sig, "```", ""]
    source = _source_path(obj)
    if source:
        out += [f"*{kind}, defined in `{source}`*", ""]
    doc = _own_doc(obj)
    if doc is None:
        out += ["(no docstring)", ""]
        return out
    summary, sections = split_docstring(doc)
    out += [prose(summary), ""]
    for section in KEPT_SECTIONS:
        if section in sections and sections[section].strip():
            out += [f"**{section}:**", "", "```text", plain(sections[section]), "```", ""]
    example = sections.get("Example") or sections.get("Examples")
    if example:
        out += ["**Example:**", "", "```pycon", example, "```", ""]
    if isinstance(obj, type):
        methods = _public_methods(obj)
        if methods:
            out += ["**Methods and properties:**", ""]
            for attr, value in methods:
                if isinstance(value, property):
                    out.append(f"* `{attr}` (property): {_first_paragraph(_own_doc(value.fget))}".rstrip())
                else:
                    method_sig = signature(value, attr, skip_self=True) or attr
                    shown = " ".join(method_sig.split()).replace("( ", "(").replace(", )", ")")
                    out.append(f"* `{shown}`: {_first_paragraph(_own_doc(value))}".rstrip())
            out.append("")
    return out


def render() -> str:
    """The whole of docs/api.md."""
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand",
        "(`tests/test_api_docs.py` fails when this page is stale). Every `Example` below runs as a",
        "doctest (`python -m pytest src/modbalance`). Tensor shapes use B for the batch, C for the",
        "classes, M for the modalities and D_m for modality m's feature width.",
        "",
        "Modules: " + ", ".join(f"[`{name}`](#{name.replace('.', '')})" for name in MODULES) + ".",
        "",
    ]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        out += [f"## {module_name}", ""]
        doc = _own_doc(module)
        if doc:
            summary, _ = split_docstring(doc)
            out += [prose(summary.split("\n\n", 1)[0]), ""]
        names = list(getattr(module, "__all__", []))
        out += ["Public names: " + ", ".join(f"`{name}`" for name in names) + ".", ""]
        for name in names:
            out += render_name(module, name)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.is_file() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
