"""Validation errors of the configuration file as one line each: file, line, dotted key, reason.

A pydantic error names a location inside the model; these helpers map it back to the YAML node it
came from (for its line number) and to the words a user typed (a misspelt key gets its nearest
known name).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from triage.config.models import SourceSettings, json_schema


def describe(
    cfg_path: Path,
    exc: ValidationError,
    data: Any,
    node: yaml.Node | None,
    sources: SourceSettings,
) -> str:
    """One line per problem: ``file:line: key.path: what is wrong``."""
    merged: dict[tuple[str | int, ...], list[str]] = {}
    got: dict[tuple[str | int, ...], str] = {}
    for err in exc.errors():
        loc, msg, value = _explain(err, data, sources)
        msgs = merged.setdefault(loc, [])
        if msg not in msgs:
            msgs.append(msg)
        if value is not None:
            got[loc] = value
    ordered = sorted(merged, key=lambda loc: _line_of(node, loc) or 0)  # as they read in the file
    lines = [
        located(
            cfg_path,
            node,
            loc,
            " or ".join(merged[loc]) + (f" (got {got[loc]})" if loc in got else ""),
        )
        for loc in ordered
    ]
    if len(lines) > 10:
        lines = [*lines[:10], f"... and {len(lines) - 10} more"]
    return "\n".join(lines)


def _explain(
    err: Any, data: Any, sources: SourceSettings
) -> tuple[tuple[str | int, ...], str, str | None]:
    """The error's location in the file's own keys, a message a user can act on, the bad value."""
    kind = err["type"]
    loc = _file_path(err["loc"], data, missing=kind == "missing")
    value = err.get("input")
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _known_keys(sources), n=1, cutoff=0.75)
        what = "unknown key"
        if len(loc) == 3 and loc[0] == "sources":  # a connector's setting: name the source too
            what = f"unknown setting '{loc[2]}' of source '{_source_name(data, loc[1])}'"
        return loc, what + (f" (did you mean '{hint[0]}'?)" if hint else ""), None
    if kind == "missing":
        return loc, "required key is missing", None
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        if not isinstance(value, dict):
            return loc, "expected a mapping", _show(value)
        if kind == "union_tag_not_found":
            return (*loc, "type"), "required key is missing", None
        what = "source" if loc and loc[0] == "sources" else "destination"
        tags = sorted(err["ctx"]["expected_tags"].replace("'", "").split(", "))
        hint = difflib.get_close_matches(str(value["type"]), tags, n=1, cutoff=0.6)
        known = f"did you mean '{hint[0]}'? " if hint else ""
        known += f"known: {', '.join(tags)}"
        return (*loc, "type"), f"unknown {what} type ({known})", _show(value["type"])
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return loc, "expected a mapping", _show(value)
    if kind == "invalid_key":
        return loc, "keys must be text", None
    if kind == "value_error":  # our own validators: the message already quotes the value
        return loc, str(err["ctx"]["error"]), None
    message = str(err["msg"])
    return loc, f"{message[:1].lower()}{message[1:]}", _show(value)


def _source_name(data: Any, index: Any) -> str:
    try:
        return str(data["sources"][index]["name"])
    except (KeyError, IndexError, TypeError):
        return f"sources[{index}]"


def _file_path(loc: tuple[Any, ...], data: Any, missing: bool) -> tuple[str | int, ...]:
    """The keys of the file along an error's location, without pydantic's own steps.

    Pydantic adds the tag of a discriminated union (``file``), the member type names of a union
    (``bool``, ``constrained-float``) and ``[key]``; a reader wants ``sources[2].pattern``.
    """
    out: list[str | int] = []
    here: Any = data
    for part in loc:
        present = (isinstance(here, dict) and part in here) or (
            isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here)
        )
        if present:
            here = here[part]
            out.append(part)
        elif missing and isinstance(here, dict) and part != here.get("type"):
            out.append(part)  # the key the file lacks
            here = None
    return tuple(out)


def located(cfg_path: Path, node: yaml.Node | None, loc: tuple[str | int, ...], msg: str) -> str:
    """One problem as ``file:line: dotted.key: message`` (the line when the YAML node has it)."""
    line = _line_of(node, loc)
    where = f"{cfg_path}:{line}" if line else str(cfg_path)
    return f"{where}: {_dotted(loc) or '(top level)'}: {msg}"


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the key (or item) at ``loc``, or of the closest mapping above it."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, nxt = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part >= 0:
            nxt = node.value[part] if part < len(node.value) else None
            line = nxt.start_mark.line + 1 if nxt is not None else line
        if nxt is None:
            break
        node = nxt
    return line


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys(sources: SourceSettings) -> tuple[str, ...]:
    """Every key the configuration knows, anywhere: for "did you mean" on a misspelt one."""
    keys: set[str] = set()
    stack: list[Any] = [json_schema(sources)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys.update(item.get("properties", {}))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return tuple(sorted(keys))
