"""Run a compiled rule set over facts in CLIPS and turn what fired into findings."""

from __future__ import annotations

import math
import numbers
import re
import shlex
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import clips

from kubenetdiag.errors import InputError
from kubenetdiag.facts.census import census_facts
from kubenetdiag.facts.model import Fact, Scalar
from kubenetdiag.facts.registry import registry
from kubenetdiag.localize import ZH, tidy_zh
from kubenetdiag.localize import value as localized
from kubenetdiag.vocabulary import SEVERITY_RANK

from .compiler import DERIVE_FN, FIRED, Program, clips_string
from .model import PLACEHOLDER_RE, Rule
from .open_findings import note_open_findings
from .ruleset import RuleSet

_NULL_TEXT = {"en": "unknown", "zh-CN": "未知"}
_CLUSTER_TEXT = {"en": "the cluster", "zh-CN": "集群"}


class EngineError(RuntimeError):
    """CLIPS failed while building or running the rules: a bug in a rule or in the engine."""


# The inference budget (docs/hardening.md). A rule fires once per finding it makes (17 times
# on the three-node example); two rules that re-trigger each other fire forever. CLIPS runs
# in steps so that the budget is checked between them (Ctrl-C: see execute).
MAX_FIRINGS = 5_000_000
MAX_SECONDS = 300.0
_STEP = 10_000


class _ErrorCapture(clips.Router):
    """Collects what CLIPS writes to stderr. clipspy's own error router passes each message on to
    lower-priority routers, so this sees everything and keeps it off the operator's terminal."""

    def __init__(self) -> None:
        super().__init__("kubenetdiag-errors", 30)
        self.parts: list[str] = []

    def query(self, name: str) -> bool:
        return name == "stderr"

    def write(self, name: str, message: str) -> None:
        self.parts.append(message)

    def take(self) -> str:
        text = "".join(self.parts).strip()
        self.parts.clear()
        return text


@dataclass
class _Derived:
    kind: str
    attrs: dict[str, Scalar]
    rules: set[int] = field(default_factory=set)
    sources: set[int] = field(default_factory=set)


def _py(value: Any) -> Scalar:
    """A slot value back in Python terms (symbols nil/TRUE/FALSE are our None/True/False)."""
    if type(value) is clips.Symbol:
        if value == "nil":
            return None
        if value == "TRUE":
            return True
        if value == "FALSE":
            return False
        return str(value)
    return value


def _fact_id(value: Any) -> int:
    """A fact's index from its `__id` slot: the symbol i<index> for a base fact (CLIPS keeps
    every distinct integer in one hash table of 8,191 buckets, so a million integer ids made
    long chains to walk on every assert), the integer the derive callback gave a derived one."""
    return int(value[1:]) if type(value) is clips.Symbol else int(value)


class _Deriver:
    """The `kd-derive` callback: one negative id per distinct derived fact, plus its history."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.ids: dict[tuple, int] = {}
        self.records: dict[int, _Derived] = {}

    def __call__(self, rule: int, kind_index: int, n_ids: int, *rest: Any) -> int:
        sources, values = map(_fact_id, rest[:n_ids]), rest[n_ids:]
        # type() is part of the key: the STRING "nil" and the symbol nil are different values.
        key = (kind_index, tuple((type(v), v) for v in values))
        did = self.ids.get(key)
        if did is None:
            did = -(len(self.ids) + 1)
            self.ids[key] = did
            kind = self.program.derived_kinds[kind_index]
            names = ("node", *registry()[kind].attrs)
            attrs = {n: _py(v) for n, v in zip(names, values, strict=True)}
            self.records[did] = _Derived(kind, attrs)
        rec = self.records[did]
        rec.rules.add(rule)
        rec.sources.update(sources)
        return did


def build_environment(program: Program, deriver: Any = None) -> tuple[clips.Environment, Any]:
    """A fresh environment holding the program; raise EngineError if CLIPS rejects a construct."""
    env = clips.Environment()
    capture = _ErrorCapture()
    env.add_router(capture)
    env.define_function(deriver if deriver is not None else _Deriver(program), DERIVE_FN)
    for text in program.templates:
        _build(env, text, "CLIPS rejected a template")
    for i, text in enumerate(program.rule_constructs):
        r = program.rules[i] if i < len(program.rules) else None
        where = f" {r.id} ({r.file}:{r.line})" if r else ""
        _build(env, text, f"CLIPS rejected rule{where}")
    capture.take()
    return env, capture


def _build(env: clips.Environment, text: str, what: str) -> None:
    # CLIPS asks every router about every character it parses, and each of clipspy's routers
    # is a call into Python: with them active, building the rule set took 0.13 s, without them
    # 8 ms, paid on every analysis and every rule test. A construct that fails is built again
    # with the routers on, only to get CLIPS's message (a failed construct defines nothing).
    routers = list(env.routers())
    for router in routers:
        router.deactivate()
    try:
        env.build(text)
        return
    except clips.CLIPSError:
        pass
    finally:
        for router in routers:
            router.activate()
    try:
        env.build(text)
    except clips.CLIPSError as exc:
        raise EngineError(f"{what}: {exc}") from None
    raise EngineError(f"{what}, then accepted it when built again")


def _bad_fact(idx: int, fact: Fact, message: str) -> InputError:
    return InputError(
        f"fact #{idx} ({fact.kind} on {fact.node!r}): {message}",
        hint="the facts do not match the registry (facts/kinds/*.yaml); re-run the parser",
    )


_MISSING = object()  # what `_literal_of` is given for an attribute a fact does not have


def _literal_of(typ: str, nullable: bool) -> Callable[[Any], str]:
    """A function giving the CLIPS literal of a value of this registry type, or raising
    ValueError. It is the only way node output reaches CLIPS, so it quotes every string.

    Types are exact: a str subclass (StrEnum) is read as its plain text and a numpy number as
    the number it holds, so every fact reaches CLIPS as the type the rules were compiled for.
    """

    def other(value: Any) -> str:
        if nullable and (value is None or value is _MISSING):
            return "nil"  # a nullable attribute a fact leaves out is unknown
        if value is _MISSING:
            raise ValueError("attribute missing")
        raise ValueError(f"{value!r} is not a {typ}" + ("" if value is not None else " (null)"))

    def text(value: Any) -> str:
        if type(value) is not str:
            if not isinstance(value, str):
                return other(value)
            value = str.__str__(value)
        if "\x00" in value:
            # The text reaches C as a NUL-terminated string: a NUL would end it there.
            value = value.replace("\x00", "\ufffd")
        return clips_string(value)

    def integer(value: Any) -> str:
        if type(value) is int:
            return str(value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return str(int(value))
        return other(value)

    def real(value: Any) -> str:
        if type(value) is not float:
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                return other(value)
            value = float(value)
        if not math.isfinite(value):
            # CLIPS has no literal for it, and an infinite round-trip time is no measurement.
            if nullable:
                return "nil"
            raise ValueError(f"{value!r} is not a finite number")
        return repr(value)  # always has "." or "e", so CLIPS reads a FLOAT

    def boolean(value: Any) -> str:
        if value is True:
            return "TRUE"
        if value is False:
            return "FALSE"
        return other(value)

    return {"str": text, "int": integer, "float": real, "bool": boolean}[typ]


def _gate(filters: list | None) -> tuple[tuple[str, frozenset], ...]:
    """Set lookups that reject most facts before the full test: (attr, allowed values) pairs,
    of which a fact that some filter can pass meets at least one. Empty: no such lookups.

    Each filter lends its most selective set: one that names values rather than a bool (a
    rule asking for running processes still wants only the few process names it names), then
    the smallest. Filters that lend the same attribute share one lookup.
    """
    if not filters:
        return ()
    lookups: dict[str, frozenset] = {}
    for f in filters:
        sets = [(a, c) for a, c in f if type(c) is frozenset]
        if not sets:
            return ()  # this filter has only predicates: a lookup could reject what it passes
        attr, allowed = min(
            sets, key=lambda ac: (all(type(v) is bool for v in ac[1]), len(ac[1]), ac[0])
        )
        lookups[attr] = lookups.get(attr, frozenset()) | allowed
    return tuple(sorted(lookups.items()))


_CHUNK = 20_000  # facts per text handed to CLIPS: bounds the text's size at any cluster size


def _assert_facts(env: clips.Environment, program: Program, facts: Sequence[Fact],
                  quiet: Sequence[clips.Router]) -> int:
    """Assert the facts some pattern can match, as text that CLIPS reads in C.

    clipspy's assert_fact costs a few cffi calls per slot: at 5,000 nodes that was 3.5 of
    the 5 seconds of inference. Every value in the text is typed and quoted by `_literal_of`
    against the registry, so node output cannot change the text's structure.
    """
    reg = registry()
    node_literal = _literal_of("str", False)
    plans = {}
    for kind, lay in program.kinds.items():
        if not lay.matched:
            continue
        spec = reg[kind]
        attrs = sorted(lay.referenced)
        # str.format only places our literals: its format string is built from registry names.
        form = "".join(
            [f"({lay.template} (__id i{{}}) (f_node {{}})"]
            + [f" ({lay.slot(a)} {{}})" for a in attrs]
            + [")\n"]
        ).format
        slots = [(a, _literal_of(spec.attrs[a].type, spec.attrs[a].nullable)) for a in attrs]
        plans[kind] = (form, lay.filters, slots, _gate(lay.filters))
    nodes: dict[str, str] = {}
    texts: list[str] = []
    for idx, fact in enumerate(facts):
        plan = plans.get(fact.kind)
        if plan is None:
            continue  # no rule looks at this kind: asserting it would only cost time
        form, filters, slots, gates = plan
        values = fact.attrs
        node = fact.node
        try:
            if gates:
                for attr, allowed in gates:
                    if (node if attr == "node" else values.get(attr)) in allowed:
                        break
                else:
                    continue
            if filters is not None:
                for f in filters:
                    for attr, check in f:
                        v = node if attr == "node" else values.get(attr)
                        if type(check) is frozenset:
                            if v not in check:
                                break
                        elif not check(v):
                            break
                    else:
                        break
                else:
                    continue
            node_text = nodes.get(node)  # type: ignore[arg-type]
            if node_text is None:
                if type(node) is not str:
                    raise ValueError("node is not a string")
                node_text = nodes[node] = node_literal(node)
            texts.append(form(idx, node_text, *[lit(values.get(a, _MISSING)) for a, lit in slots]))
        except (ValueError, TypeError) as exc:
            missing = [a for a, _ in slots if a not in values]
            why = f"attribute {missing[0]!r} is missing" if missing else str(exc)
            raise _bad_fact(idx, fact, why) from None
    # While CLIPS reads the text it asks every router, once per character, whether it handles
    # the input: a Python router makes that a call into Python per character (20x slower).
    count = "(length$ (get-fact-list))"
    before = env.eval(count)
    for router in quiet:
        router.deactivate()
    try:
        for start in range(0, len(texts), _CHUNK):
            env.load_facts("".join(texts[start:start + _CHUNK]))
    except clips.CLIPSError as exc:
        raise EngineError(f"CLIPS could not read the facts: {exc}") from None
    finally:
        for router in quiet:
            router.activate()
    # With its routers off, CLIPS skips a fact it cannot read and says so to no one: count
    # them. Only a quoting bug of ours could cause it, as every value went through _literal_of.
    read = env.eval(count) - before
    if read != len(texts):
        raise EngineError(f"CLIPS read {read} of the {len(texts)} facts it was given")
    return read


def _rule_of_error(program: Program, message: str) -> str:
    m = re.search(r"defrule '?(?:MAIN::)?r(\d+)'?", message)
    if not m or int(m.group(1)) >= len(program.rules):
        return ""
    r = program.rules[int(m.group(1))]
    return f" in rule {r.id} ({r.file}:{r.line})"


def _run_within_budget(env: clips.Environment, program: Program) -> None:
    fired, started = 0, time.monotonic()
    while True:
        step = env.run(_STEP)
        fired += step
        if step < _STEP:
            return
        spent = time.monotonic() - started
        if fired >= MAX_FIRINGS or spent > MAX_SECONDS:
            counts: dict[int, int] = defaultdict(int)
            for f in env.find_template(FIRED).facts():
                counts[int(f["rule"])] += 1
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
            names = ", ".join(f"{program.rules[i].id} ({program.rules[i].file}:"
                              f"{program.rules[i].line}, {n:,} times)" for i, n in top)
            raise InputError(
                f"the rules fired {fired:,} times in {spent:.0f} s without coming to rest; "
                f"most: {names}",
                hint="rules that re-trigger each other, or a pattern sharing no variable with "
                     "the others, never finish: fix or --disable them")


def execute(program: Program, facts: Sequence[Fact]) -> tuple[dict[int, list], _Deriver]:
    """Run the program; return each fired rule's activations (ids, values) and derived facts.

    CLIPS runs in a thread of its own, which this one waits on. One call into it can last
    many seconds (asserting a fact that completes hundreds of thousands of partial matches of
    a site rule whose patterns share no variable), and Python handles a signal only in the
    main thread, between its own steps: waiting on a lock there, Ctrl-C is seen at once, and
    the CLI leaves without waiting for the engine (cli.main)."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = _execute(program, facts)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            outcome["error"] = exc

    engine = threading.Thread(target=work, name="kubenetdiag-inference", daemon=True)
    engine.start()
    engine.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _execute(program: Program, facts: Sequence[Fact]) -> tuple[dict[int, list], _Deriver]:
    deriver = _Deriver(program)
    env, capture = build_environment(program, deriver)
    _assert_facts(env, program, facts, list(env.routers()))
    _run_within_budget(env, program)
    message = capture.take()
    state = env.error_state
    if message or state is not None:
        text = message or str(state)
        raise EngineError(f"a rule failed inside CLIPS{_rule_of_error(program, text)}: {text}")
    fired: dict[int, list] = defaultdict(list)
    for f in env.find_template(FIRED).facts():
        fired[f["rule"]].append(
            (tuple(map(_fact_id, f["ids"])), tuple(_py(v) for v in f["vals"]))
        )
    return fired, deriver


def _sort_key(v: Scalar) -> tuple:
    if isinstance(v, bool) or v is None:
        return (2, str(v))
    if isinstance(v, (int, float)):
        return (0, v, "")
    return (1, v)


def _show(v: Scalar, lang: str) -> str:
    if v is None:
        return _NULL_TEXT.get(lang, _NULL_TEXT["en"])
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        return str(int(v))
    return str(v)


def _as_built(line: str) -> str:
    """`line` when it is a command line as shlex.join builds it (only then does it hold no
    operator, redirection or substitution the shell would act on), else quoted as one word."""
    try:
        if shlex.join(shlex.split(line)) == line:
            return line
    except ValueError:
        pass
    return shlex.quote(line)


def render(text: str, values: dict[str, list[Scalar]], nodes: list[str], lang: str,
           *, shell: bool = False, verbatim: frozenset[str] = frozenset()) -> str:
    """Fill `{name}` placeholders. A plain regex, never str.format: rule text is untrusted and
    format strings can reach attributes of their arguments.

    With `shell`, `text` is a command the operator may paste into a shell, and the values come
    from node output (an interface name, a comment on an iptables rule): each is shell-quoted,
    several values become several words, and a cluster-wide finding leaves `{node}` as written
    (there is no host to put there). A `verbatim` variable holds a command line kubenetdiag
    built and quoted word by word itself (path.undo): it goes in as it is, one per line when
    there are several. A value that is not known (null) cannot be pasted: the command is then
    printed commented out, with `<name unknown>` in its place, so pasting it does nothing.
    """
    unknown: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "node":
            if shell:
                return " ".join(map(shlex.quote, nodes)) if nodes else m.group(0)
            return ", ".join(nodes) if nodes else _CLUSTER_TEXT.get(lang, "the cluster")
        if name not in values:
            return m.group(0)
        if shell and any(v is None for v in values[name]):
            unknown.append(name)
            return f"<{name} unknown>"
        if shell and name in verbatim:
            return "\n".join(_as_built(str(v)) for v in dict.fromkeys(values[name]))
        shown: list[str] = []
        for v in sorted(values[name], key=_sort_key):
            s = _show(v, lang)
            if not shell and isinstance(v, str):
                # a word or a collector message this version can say in the report's language
                s = localized(s, lang, name)
            if s not in shown:
                shown.append(s)
        if shell:
            return " ".join(shlex.quote(s) for s in shown)
        return ", ".join(shown)

    out = PLACEHOLDER_RE.sub(sub, text)
    if lang == ZH and not shell:
        out = tidy_zh(out)
    if unknown:
        names = ", ".join(dict.fromkeys(unknown))
        out = "\n".join([f"# not known from what was collected: {names}; fill in by hand:",
                          *(f"# {line}" for line in out.splitlines())])
    return out


@dataclass
class _Outcome:
    """What one rule concluded about one place: the activations that share their nodes."""

    rule: Rule
    nodes: set[str]
    ids: set[int]
    values: dict[str, list[Scalar]]
    symptoms: set[str]

    def add(self, other: _Outcome) -> None:
        self.nodes |= other.nodes
        self.ids |= other.ids
        for name, vs in other.values.items():
            self.values[name].extend(vs)


def _overlap(a: set[str], b: set[str]) -> bool:
    # Two cluster-wide conclusions (no nodes) are about the same place.
    return bool(a & b) if (a or b) else True


def findings(program: Program, facts: Sequence[Fact], fired: dict[int, list], deriver: _Deriver
             ) -> list[dict[str, Any]]:
    memo: dict[int, frozenset[int]] = {}

    def base_ids(i: int, seen: frozenset[int] = frozenset()) -> frozenset[int]:
        if i >= 0:
            return frozenset((i,))
        if i in memo:
            return memo[i]
        out: set[int] = set()
        for s in deriver.records[i].sources:
            if s not in seen:
                out |= base_ids(s, seen | {i})
        memo[i] = frozenset(out)
        return memo[i]

    def node_of(i: int) -> Scalar:
        return facts[i].node if i >= 0 else deriver.records[i].attrs.get("node")

    def named_causes(ids: set[int]) -> set[str]:
        """The faults that `cause` facts behind these facts name, however deep."""
        out: set[str] = set()
        seen: set[int] = set()
        todo = [i for i in ids if i < 0]
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            rec = deriver.records[i]
            if rec.kind == "cause" and isinstance(rec.attrs.get("fault"), str):
                out.add(rec.attrs["fault"])  # type: ignore[arg-type]
            todo.extend(s for s in rec.sources if s < 0)
        return out

    symptoms: dict[int, set[str]] = defaultdict(set)
    for rec in deriver.records.values():
        if rec.kind == "symptom" and isinstance(rec.attrs.get("name"), str):
            for r in rec.rules:
                symptoms[r].add(rec.attrs["name"])  # type: ignore[arg-type]

    # One rule's activations are grouped by the nodes they are about, and each group is judged
    # on its own: a DROP rule that fires on node1 and node2, where only node2's is explained by
    # a security agent there, is a root cause on node1 and a consequence on node2.
    groups: dict[int, dict[tuple[str, ...], _Outcome]] = {}
    for ri, acts in fired.items():
        rule = program.rules[ri]
        on = rule.variables.index(rule.on.name) if rule.on else None
        by_place: dict[tuple[str, ...], _Outcome] = {}
        for ids, vals in acts:
            where = [vals[on]] if on is not None else [node_of(i) for i in ids]
            place = tuple(sorted({n for n in where
                                  if isinstance(n, str) and n and n != "cluster"}))
            o = by_place.get(place)
            if o is None:
                o = by_place[place] = _Outcome(
                    rule, set(place), set(), {v: [] for v in rule.variables}, symptoms[ri]
                )
            o.ids.update(ids)
            for name, v in zip(rule.variables, vals, strict=True):
                o.values[name].append(v)
        groups[ri] = by_place

    # Where each conclusion touches: its own nodes plus the nodes of every fact behind it. A
    # cause explains a consequence seen elsewhere when its evidence was gathered there: BGP
    # sessions to node3 observed on node1 explain node1's missing route to node3's pods.
    # (Evidence is expanded here, in the order findings are built, because base_ids memoises
    # and a derivation cycle makes its answer depend on the order of the first calls.)
    def reach(o: _Outcome) -> tuple[list[int], set[str]]:
        ev = sorted(set().union(*(base_ids(i) for i in o.ids)))
        t = set(o.nodes)
        for b in ev:
            n = facts[b].node
            if isinstance(n, str) and n and n != "cluster":
                t.add(n)
        return ev, t

    touches: dict[tuple[int, tuple[str, ...]], set[str]] = {}
    causes: dict[int, set[str]] = {}  # a fault rule's reach over all its activations
    for ri, by_place in groups.items():
        if program.rules[ri].fault is not None:
            for place, o in by_place.items():
                touches[ri, place] = reach(o)[1]
            causes[ri] = set().union(*(touches[ri, place] for place in by_place))

    wide = any(not reached for reached in causes.values())  # a cluster-wide cause fired
    out = []
    for ri, by_place in groups.items():
        rule = program.rules[ri]
        if rule.fault is None:
            continue
        # Groups that come to the same verdict are one finding again, so a rule reads as one
        # finding unless the places it fired on must be told apart.
        merged: dict[tuple[str, ...], _Outcome] = {}
        for place in sorted(by_place):
            o = by_place[place]
            mine = {rule.fault} | o.symptoms
            touched = touches[ri, place]
            # A cluster-wide cause (one that reaches no node, as the zones' latency) shares no
            # node with a consequence on one: it explains it when a rule asserted, from the
            # consequence's own evidence, a `cause` fact naming its fault.
            named = named_causes(o.ids) if wide else set()
            explained_by = tuple(sorted(
                program.rules[si].id
                for si, reached in causes.items()
                if si != ri
                and mine & set(program.rules[si].explains)
                and program.rules[si].fault != rule.fault
                and (_overlap(touched, reached)
                     or (not reached and program.rules[si].fault in named))
            ))
            if explained_by not in merged:
                merged[explained_by] = _Outcome(
                    rule, set(), set(), {v: [] for v in rule.variables}, o.symptoms
                )
            merged[explained_by].add(o)
        for explained_by, o in merged.items():
            out.append(_finding(rule, o, reach(o)[0], list(explained_by), facts))
    out.sort(key=lambda f: (not f["root_cause"], SEVERITY_RANK[f["severity"]], f["rule"],
                            f["nodes"]))
    return out


def _finding(rule: Rule, o: _Outcome, evidence_ids: list[int], explained_by: list[str],
             facts: Sequence[Fact]) -> dict[str, Any]:
    nodes = sorted(o.nodes)

    def text(key: str, lang: str) -> str:
        t = rule.texts.get(key)
        if not t:
            return ""
        return render(t.get(lang, t["en"]), o.values, nodes, lang)

    finding: dict[str, Any] = {
        "rule": rule.id,
        "fault": rule.fault,
        "severity": rule.severity,
        "confidence": rule.confidence,
        "title": text("title", "en"),
        "explain": text("explain", "en"),
        "nodes": nodes,
        "root_cause": not explained_by,
        "explained_by": explained_by,
        "explains": list(rule.explains),
        "evidence": [facts[i].to_dict() for i in evidence_ids],
        "remediation": [
            {
                "text": render(r.text["en"], o.values, nodes, "en"),
                "command": render(r.command, o.values, nodes, "en", shell=True,
                                  verbatim=rule.verbatim)
                if r.command else r.command,
                "changes_state": r.changes_state,
            }
            for r in rule.remediate
        ],
        "i18n": {},
    }
    if rule.has_lang("zh-CN"):
        finding["i18n"]["zh-CN"] = {
            "title": text("title", "zh-CN"),
            "explain": text("explain", "zh-CN"),
            "remediation": [
                render(r.text.get("zh-CN", r.text["en"]), o.values, nodes, "zh-CN")
                for r in rule.remediate
            ],
        }
    return finding


def infer(ruleset: RuleSet, facts: list[Fact]) -> list[dict[str, Any]]:
    """Findings for `facts` under `ruleset`: one per fired rule with a fault, ordered root causes
    first, then by severity, then by rule id. A new CLIPS environment per call."""
    # Counted here rather than by the parser so that every caller (analyze, rule tests, a
    # site's own facts) sees the same census as its facts.
    facts = [*facts, *census_facts(facts)]
    fired, deriver = execute(ruleset.program, facts)
    found = findings(ruleset.program, facts, fired, deriver)
    # An unexplained symptom says what was ruled out: only as far as the other findings and the
    # probes that ran on its nodes allow (open_findings.py).
    return note_open_findings(ruleset.program.rules, found, facts)
