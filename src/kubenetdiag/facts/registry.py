"""The facts registry (facts/kinds/*.yaml): the one list of fact kinds that all stages share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from kubenetdiag.facts.model import Fact, Scalar
from kubenetdiag.yamlsrc import load_plain

TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}
RESERVED = frozenset({"kind", "node", "source", "id"})


@dataclass(frozen=True)
class AttrSpec:
    name: str
    type: str
    doc: str
    nullable: bool = False
    # The value is a whole command line that kubenetdiag built itself, every word already
    # shell-quoted (path.undo): a remediation command inserts it as it is, where any other value
    # is quoted as one word.
    command: bool = False

    def accepts(self, value: Scalar) -> bool:
        if value is None:
            return self.nullable
        if self.type in ("int", "float") and isinstance(value, bool):
            return False
        return isinstance(value, TYPES[self.type])


@dataclass(frozen=True)
class DiffSpec:
    """How `kubenetdiag diff` compares this kind between two runs: facts of one node with the
    same `key` attributes are the same thing, whose other attributes may have changed;
    `ignore` lists the attributes that move on their own (counters, PIDs, positions)."""

    key: tuple[str, ...]
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class KindSpec:
    name: str
    doc: str
    attrs: dict[str, AttrSpec]
    derived: bool = False
    diff: DiffSpec | None = None  # None: not compared (measurements, derived views)


@cache
def registry() -> dict[str, KindSpec]:
    """Every kind from facts/kinds/*.yaml: one file per area, so areas grow independently."""
    kinds: dict[str, KindSpec] = {}
    raw: dict[str, dict] = {}
    files = sorted(
        resources.files("kubenetdiag.facts").joinpath("kinds").iterdir(), key=lambda f: f.name
    )
    for f in files:
        if not f.name.endswith(".yaml"):
            continue
        for name, spec in (load_plain(f.read_text("utf-8")) or {}).items():
            if name in raw:
                raise ValueError(f"fact kind {name!r} is declared twice (second in {f.name})")
            raw[name] = spec
    for name, spec in raw.items():
        attrs = {
            a: AttrSpec(a, s["type"], s.get("doc", ""), bool(s.get("nullable", False)),
                        bool(s.get("command", False)))
            for a, s in spec["attrs"].items()
        }
        kinds[name] = KindSpec(name, spec.get("doc", ""), attrs, bool(spec.get("derived", False)),
                               _diff_spec(name, spec.get("diff"), attrs))
    return kinds


def _diff_spec(kind: str, raw: dict | None, attrs: dict[str, AttrSpec]) -> DiffSpec | None:
    if raw is None:
        return None
    spec = DiffSpec(tuple(raw.get("key") or ()), tuple(raw.get("ignore") or ()))
    unknown = [a for a in (*spec.key, *spec.ignore) if a not in attrs]
    if unknown:
        raise ValueError(f"fact kind {kind!r}: diff names unknown attributes {unknown}")
    return spec


def validate_fact(fact: Fact) -> list[str]:
    """Problems with a fact against the registry; empty when it conforms."""
    spec = registry().get(fact.kind)
    if spec is None:
        return [f"unknown fact kind {fact.kind!r}"]
    problems = []
    for name, value in fact.attrs.items():
        a = spec.attrs.get(name)
        if a is None:
            problems.append(f"{fact.kind}: unknown attribute {name!r}")
        elif not a.accepts(value):
            problems.append(f"{fact.kind}.{name}: {value!r} is not a {a.type}")
    for name, a in spec.attrs.items():
        if name not in fact.attrs and not a.nullable:
            problems.append(f"{fact.kind}: missing attribute {name!r}")
    return problems
