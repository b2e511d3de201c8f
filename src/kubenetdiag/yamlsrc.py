"""Load YAML while remembering where every value came from.

Inventories and rule files are written by people; when one is wrong the error must name the file
and the line. PyYAML's plain loaders drop positions and silently keep the last of two duplicate
keys, so we compose the node tree ourselves and keep a map from each value's path to its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubenetdiag.errors import InputError
from kubenetdiag.files import NotRegularFile, TooLarge, read_at_most

Path_ = tuple[str | int, ...]

# Limits on what one file may expand to (docs/hardening.md). An alias is expanded where it is
# used, so a 540-byte file of nested aliases ("billion laughs") names a billion values: the
# count includes every expansion, and stops it long before memory runs out.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_VALUES = 1_000_000
MAX_DEPTH = 64


@dataclass
class YamlDoc:
    """A parsed YAML document plus the 1-based line of every mapping key and sequence item."""

    data: Any
    file: str
    lines: dict[Path_, int] = field(default_factory=dict)
    values: int = 0  # every value built so far, aliases counted once per use

    def line_of(self, path: Path_) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def error(self, path: Path_, message: str, hint: str = "") -> InputError:
        return InputError(message, file=self.file, line=self.line_of(path), hint=hint)


# libyaml's parser builds the same nodes, marks included, about ten times faster than the
# pure-Python one; rule files and the registry are read on every run.
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE):  # type: ignore[misc,valid-type]
    """Safe loader that refuses duplicate keys instead of keeping the last one."""


def load_plain(text: str):  # noqa: ANN201 (any YAML value)
    """Safe, fast load where no line numbers are needed (shipped data, small user lists)."""
    return yaml.load(text, Loader=_BASE)  # noqa: S506 (a safe loader)


def _limit(doc: YamlDoc, node: yaml.Node, message: str, hint: str) -> InputError:
    return InputError(message, file=doc.file, line=node.start_mark.line + 1, hint=hint)


def _node_to_python(loader: _Loader, node: yaml.Node, path: Path_, doc: YamlDoc,
                    inside: tuple[int, ...] = ()) -> Any:
    doc.values += 1
    if doc.values > MAX_VALUES:
        raise _limit(doc, node, f"the file expands to more than {MAX_VALUES:,} values",
                     "aliases (*name) nested in aliases multiply; write the values out")
    if len(inside) >= MAX_DEPTH:
        raise _limit(doc, node, f"nested more than {MAX_DEPTH} levels deep",
                     "an inventory or rule file this deep is not one a person wrote")
    if id(node) in inside:
        raise _limit(doc, node, "an alias refers to a value that contains it",
                     "a value cannot include itself; write it out")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        inside = (*inside, id(node))
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise InputError(
                    "a mapping key must be a plain value",
                    file=doc.file,
                    line=key_node.start_mark.line + 1,
                )
            if key in out:
                raise InputError(
                    f"duplicate key {key!r}",
                    file=doc.file,
                    line=key_node.start_mark.line + 1,
                    hint="YAML keeps only the last of two equal keys; merge them or rename one",
                )
            child = (*path, key if isinstance(key, str) else str(key))
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _node_to_python(loader, value_node, child, doc, inside)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            doc.lines[child] = item.start_mark.line + 1
            items.append(_node_to_python(loader, item, child, doc, inside))
        return items
    return loader.construct_object(node, deep=True)


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, before any node is built:
    libyaml's composer recurses in C and crashes the process on [[[[... thousands deep."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_BASE):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=file,
                                     line=event.start_mark.line + 1,
                                     hint="an inventory or rule file this deep is not one a "
                                          "person wrote")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # composing reports it, with its line


def load_yaml_text(text: str, file: str) -> YamlDoc:
    """Parse one YAML document; raise InputError (with file and line) on any syntax problem."""
    doc = YamlDoc(data=None, file=file)
    _check_depth(text, file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _node_to_python(loader, node, (), doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(p for p in (exc.context, exc.problem) if p)
        if isinstance(exc, yaml.constructor.ConstructorError):
            hint = "tags such as !vault or !unsafe are not supported here: write a plain value"
        else:
            hint = "check indentation and quoting on that line (tabs are not allowed in YAML)"
        raise InputError(
            f"YAML syntax error: {reason}" if hint.startswith("check") else f"YAML error: {reason}",
            file=file,
            line=mark.line + 1 if mark else None,
            hint=hint,
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", file=file) from None
    finally:
        loader.dispose()
    return doc


def load_yaml_file(path: str | Path) -> YamlDoc:
    p = Path(path)
    try:
        text = read_at_most(p, MAX_FILE_BYTES).decode("utf-8")
    except NotRegularFile:
        if p.is_dir():
            raise InputError(f"{p} is a directory, not a YAML file") from None
        raise InputError(f"{p} is not a regular file", file=str(p),
                         hint="name the YAML file itself (a FIFO or device is not one)") from None
    except TooLarge:
        raise InputError(f"{p} is larger than {MAX_FILE_BYTES >> 20} MiB", file=str(p),
                         hint="an inventory or rule file is a few hundred KiB at most") from None
    except FileNotFoundError:
        raise InputError(f"file not found: {p}", file=str(p), hint="check the path") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 text (byte {exc.start})", file=str(p)) from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror}", file=str(p)) from None
    return load_yaml_text(text, str(p))
