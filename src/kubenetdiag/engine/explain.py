"""`rules explain ID`: the chain of rules that can lead to a rule, as a readable tree.

A rule's conditions on probe facts are leaves. A condition on a derived fact (a symptom, a
cause) is an edge to every rule whose `assert` could produce a matching fact, and those rules are
expanded in turn. Rules whose `explains` names this rule's fault or symptom are listed too: they
are the root causes that turn this finding into a consequence. Everything is read from the loaded
rules, never from CLIPS, so the tree is what the author wrote.
"""

from __future__ import annotations

from .model import Assertion, Pattern, Rule, SlotTest, Var
from .ruleset import RuleSet


def _show_test(t: SlotTest) -> str:
    if t.form == "literal":
        return f"{t.attr}={t.literal!r}" if isinstance(t.literal, str) else f"{t.attr}={t.literal}"
    if t.form == "var":
        return f"{t.attr}={t.var}"
    ops = ", ".join(
        f"{o.op} {list(map(str, o.operand)) if isinstance(o.operand, tuple) else o.operand}"
        for o in t.ops
    )
    bind = f" as {t.var}" if t.var is not None else ""
    return f"{t.attr} {ops}{bind}".rstrip() if ops else f"{t.attr}={t.var}"


def describe_pattern(p: Pattern) -> str:
    """A pattern in one line; a negated one reads as the fact that must be absent."""
    body = ", ".join(_show_test(t) for t in p.tests if t.attr != "node" or t.form != "var")
    return f"{p.kind}({body})"


def could_produce(a: Assertion, p: Pattern) -> bool:
    """Could fact `a` asserts match pattern `p`? Literals must agree; a variable or an
    operator in either place may match, so it counts (the tree errs on showing a link)."""
    if a.kind != p.kind:
        return False
    for t in p.tests:
        if t.form != "literal":
            continue
        v = a.values.get(t.attr)
        if v is None and t.attr not in a.values:
            if t.literal is not None:
                return False
            continue
        if not isinstance(v, Var) and v != t.literal:
            return False
    return True


def producers(ruleset: RuleSet, p: Pattern) -> list[Rule]:
    return [r for r in ruleset.rules if any(could_produce(a, p) for a in r.asserts)]


def _head(r: Rule) -> str:
    what = f"{r.fault}, {r.severity}, {r.confidence}" if r.fault else "asserts only"
    return f"{r.id} [{what}] ({r.file.rsplit('/rules/', 1)[-1]}:{r.line})"


def _symptoms(r: Rule) -> set[str]:
    names = set()
    for a in r.asserts:
        v = a.values.get("name")
        if a.kind == "symptom" and isinstance(v, str):
            names.add(v)
    return names


def explain_tree(ruleset: RuleSet, rule_id: str, max_depth: int = 6) -> str:
    """The tree for one rule; raises KeyError when no rule has that id."""
    root = ruleset.by_id(rule_id)
    if root is None:
        raise KeyError(rule_id)
    lines = [_head(root)]

    def walk(r: Rule, prefix: str, seen: frozenset[str], depth: int) -> None:
        items: list[tuple[str, list[Rule]]] = []
        for p in r.when:
            derived = producers(ruleset, p)
            label = ("unless there is " if p.negated else "needs ") + describe_pattern(p)
            items.append((label + (", asserted by:" if derived else ""), derived))
        for i, (label, kids) in enumerate(items):
            last = i == len(items) - 1
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{label}")
            sub = prefix + ("   " if last else "│  ")
            for j, k in enumerate(kids):
                klast = j == len(kids) - 1
                mark = "└─ " if klast else "├─ "
                if k.id in seen or depth >= max_depth:
                    lines.append(f"{sub}{mark}{_head(k)} (see above)")
                    continue
                lines.append(f"{sub}{mark}{_head(k)}")
                walk(k, sub + ("   " if klast else "│  "), seen | {k.id}, depth + 1)

    walk(root, "", frozenset({root.id}), 0)
    mine = ({root.fault} if root.fault else set()) | _symptoms(root)
    causes = sorted((r for r in ruleset.rules if mine & set(r.explains) and r.id != root.id),
                    key=lambda r: r.id)
    if causes:
        lines.append("")
        lines.append(f"reported as a consequence when one of these fires on the same nodes "
                     f"(they explain {', '.join(sorted(mine))}):")
        lines += [f"  - {_head(r)}" for r in causes]
    if root.explains:
        lines.append("")
        lines.append(f"when it fires it explains: {', '.join(root.explains)}")
    return "\n".join(lines)
