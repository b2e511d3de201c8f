"""Finding rule files and reading one: YAML syntax, then the rule file JSON Schema.

Every problem becomes an InputError naming the file and line, because the person who can fix it
is a rule author looking at YAML. A rule the schema rejected is not checked further, so one
mistake is reported once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubenetdiag.errors import InputError
from kubenetdiag.yamlsrc import YamlDoc, load_yaml_file

from .model import Path_
from .schema import check_schema


def shipped_dir() -> Path:
    """The rules that come with the tool."""
    return Path(__file__).resolve().parent.parent / "rules"


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[InputError]]:
    """The rule files under the given files or directories, in a stable order."""
    files: list[Path] = []
    errors: list[InputError] = []
    for given in paths:
        given = Path(given)
        if given.is_dir():
            found = sorted(
                (f for f in given.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()),
                key=lambda f: f.relative_to(given).as_posix(),
            )
            files.extend(found)
        elif given.is_file():
            files.append(given)
        else:
            errors.append(
                InputError(f"rules path not found: {given}", hint="pass a rule file or directory")
            )
    return files, errors


@dataclass(frozen=True)
class RuleLocation:
    """One rule's place in its file, so that a problem found in it names the file and line."""

    doc: YamlDoc
    index: int

    @property
    def path(self) -> Path_:
        return ("rules", self.index)

    def error(self, where: Path_, message: str, hint: str = "") -> InputError:
        """A problem at `where`, a path inside the rule."""
        return self.doc.error((*self.path, *where), message, hint)

    def line(self, where: Path_ = ()) -> int | None:
        return self.doc.line_of((*self.path, *where))


@dataclass
class RuleFile:
    """A rule file as read: its schema-valid rules, each with its location, and the problems
    that kept the others out."""

    rules: list[tuple[RuleLocation, dict[str, Any]]] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def _restore_on_keys(doc: YamlDoc) -> None:
    """YAML 1.1 reads a bare `on:` key as the boolean true; give rules their `on` back."""
    rules = doc.data.get("rules") if isinstance(doc.data, dict) else None
    if not isinstance(rules, list):
        return
    for i, raw in enumerate(rules):
        if isinstance(raw, dict) and any(k is True for k in raw) and "on" not in raw:
            rules[i] = {("on" if k is True else k): v for k, v in raw.items()}
            line = doc.lines.get(("rules", i, "True"))
            if line is not None:
                doc.lines[("rules", i, "on")] = line


def read_rule_file(path: Path) -> RuleFile:
    """The rules of one file that its YAML and the schema let through."""
    out = RuleFile()
    try:
        doc = load_yaml_file(path)
    except InputError as exc:
        out.errors.append(exc)
        return out
    _restore_on_keys(doc)
    problems, bad_paths = check_schema(doc)
    out.errors.extend(problems)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("rules"), list):
        return out
    broken = {p[1] for p in bad_paths if len(p) >= 2 and p[0] == "rules"}
    for i, raw in enumerate(doc.data["rules"]):
        if i in broken or not isinstance(raw, dict):
            continue
        out.rules.append((RuleLocation(doc, i), raw))
    return out
