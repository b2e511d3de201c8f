"""The parsed form of a rule, between the YAML file and the CLIPS program.

Rule files are untrusted input: everything here has been schema-checked and checked against the
facts registry by the loader, and the compiler only ever reads these objects, never the raw YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kubenetdiag.facts.model import Fact, Scalar

LANGS = ("en", "zh-CN")
# A `{name}` in a rule's texts and commands: the values bound to $name, filled in when the rule
# fires. The renderer and the linter both use this one pattern, so lint flags exactly what would
# be filled. Commands hold braces that are not ours: shell `${VAR}` and curl's `%{http_code}`
# are left alone (so is anything not a plain name, like awk's `{print $1}`); awk's bare
# `{print}` is a placeholder, and is written `{ print }` to keep it literal.
PLACEHOLDER_RE = re.compile(r"(?<![$%])\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(text: str) -> list[str]:
    """The names of the `{name}` placeholders in `text`, in order."""
    return PLACEHOLDER_RE.findall(text)

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Var:
    """A `$name` in a rule."""

    name: str

    def __str__(self) -> str:
        return f"${self.name}"


Operand = Scalar | Var


@dataclass(frozen=True)
class Op:
    """One operator of an attribute constraint; `operand` is a list for in/not_in."""

    op: str
    operand: Operand | tuple[Operand, ...]


@dataclass(frozen=True)
class SlotTest:
    """The constraint on one attribute: a literal, a variable, or operators.

    Form "ops" may carry `var` too (`{in: [...], bind: $x}`): the value that passed the operators
    is bound to $x (or, if $x is bound already, must also equal it), so a pattern constrains and
    binds one fact's attribute at once.
    """

    attr: str
    form: str  # "literal" | "var" | "ops"
    literal: Scalar = None
    var: Var | None = None
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Pattern:
    kind: str
    negated: bool
    tests: tuple[SlotTest, ...]
    path: Path_ = ()


@dataclass(frozen=True)
class Assertion:
    kind: str
    values: dict[str, Scalar | Var]
    path: Path_ = ()


@dataclass(frozen=True)
class Remedy:
    text: dict[str, str]
    command: str | None
    changes_state: bool


@dataclass(frozen=True)
class RuleTest:
    name: str
    facts: tuple[Fact, ...]
    expect: tuple[dict[str, Any], ...]
    line: int | None
    problem: str = ""  # why the test cannot run as written (reported by lint too)


@dataclass
class Rule:
    """One rule as loaded. `title` is the English title; `texts` holds every language."""

    id: str
    fault: str | None
    severity: str | None
    confidence: str
    title: str
    file: str
    line: int | None
    texts: dict[str, dict[str, str]] = field(default_factory=dict)  # "title"/"explain" -> lang
    when: tuple[Pattern, ...] = ()
    asserts: tuple[Assertion, ...] = ()
    explains: tuple[str, ...] = ()
    on: Var | None = None
    remediate: tuple[Remedy, ...] = ()
    tests: tuple[RuleTest, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # Variables bound by positive patterns, in binding order: the values a firing reports.
    variables: tuple[str, ...] = ()
    # Of those, the ones bound to a `command: true` attribute (a command line kubenetdiag built
    # and quoted itself): a remediation command inserts them unquoted.
    verbatim: frozenset[str] = frozenset()

    def has_lang(self, lang: str) -> bool:
        texts = [*self.texts.values(), *(r.text for r in self.remediate)]
        return any(lang in t for t in texts)
