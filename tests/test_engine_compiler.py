"""Compiling YAML rules to CLIPS: quoting, variables, negation, operators, engine errors."""

from __future__ import annotations

import enum
import textwrap
from dataclasses import replace
from pathlib import Path

import clips
import pytest

from kubenetdiag.engine import EngineError, RuleErrors, infer, load_ruleset
from kubenetdiag.engine.compiler import clips_literal
from kubenetdiag.errors import InputError
from kubenetdiag.facts.model import Fact

HOSTILE = [
    'a"b',
    "back\\slash\\",
    "new\nline",
    '"); (assert (x))',
    '\\"); (defrule evil => (halt))',
    "?var $?multi & | ~ : =",
    "日本語 ; comment",
    # facts reach CLIPS as text: a value must not be able to close its slot and add a fact
    'x") (f_number 0)) (k_sysctl (__id 0) (f_node "evil") (f_key "k") (f_number 0',
    "",
]


def ruleset(tmp_path: Path, text: str):
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return load_ruleset([tmp_path], shipped=False)


def show_rule(tmp_path: Path, title: str, also: str = ""):
    """A rule that fires on every sysctl with number 0 and shows `title` (plus `also`, one
    more condition)."""
    when = "- sysctl: {node: $node, key: $key, number: 0}"
    if also:
        when += "\n              " + also
    return ruleset(tmp_path, f"""
        rules:
          - id: show
            fault: shown
            severity: info
            title: "{title}"
            when:
              {when}
        """)


def sysctl(node: str, key: str, number, present: bool = True) -> Fact:
    value = None if number is None else str(number)
    return Fact("sysctl", node, {"key": key, "value": value, "number": number, "present": present})


def fired(findings: list[dict], rule: str) -> list[str] | None:
    for f in findings:
        if f["rule"] == rule:
            return f["nodes"]
    return None


@pytest.mark.parametrize("text", HOSTILE)
def test_clips_literal_round_trips_hostile_strings(text):
    env = clips.Environment()
    assert env.eval(clips_literal(text)) == text


def test_clips_literal_refuses_nul():
    with pytest.raises(ValueError):
        clips_literal("a\x00b")


def test_hostile_strings_in_rule_file_match_only_themselves(tmp_path):
    # Each hostile string becomes one rule; YAML double-quoted escapes carry it exactly.
    rules = []
    for i, s in enumerate(HOSTILE):
        quoted = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        rules.append(
            f"""
              - id: r{i}
                fault: f{i}
                severity: info
                title: t
                when:
                  - sysctl: {{node: $node, key: "{quoted}"}}
            """
        )
    rs = ruleset(tmp_path, "rules:" + "".join(rules))
    facts = [sysctl(f"n{i}", s, 1) for i, s in enumerate(HOSTILE)]
    findings = infer(rs, facts)
    assert {f["rule"]: f["nodes"] for f in findings} == {
        f"r{i}": [f"n{i}"] for i in range(len(HOSTILE))
    }
    # Nothing the strings tried to define exists.
    assert all(c.startswith(("(deftemplate", "(defrule r")) for c in
               rs.program.templates + rs.program.rule_constructs)


def test_hostile_fact_values_are_data(tmp_path):
    rs = show_rule(tmp_path, "{node} has {key}")
    facts = [sysctl(s, s, 0) for s in HOSTILE if s]
    findings = infer(rs, facts)
    (f,) = findings
    assert f["nodes"] == sorted(s for s in HOSTILE if s)
    assert '"); (assert (x))' in f["title"]
    assert len(f["evidence"]) == len(facts)
    assert "evil" not in f["nodes"]


@pytest.mark.parametrize("text", [s for s in HOSTILE if s])
def test_a_hostile_value_comes_back_from_clips_exactly(tmp_path, text):
    rs = show_rule(tmp_path, "[{key}]")
    (f,) = infer(rs, [sysctl("n1", text, 0)])
    assert f["title"] == f"[{text}]"


def test_nul_and_non_finite_values_cannot_break_the_fact_text(tmp_path):
    rs = show_rule(tmp_path, "[{key}] {rtt}", "- reach: {node: $node, rtt_ms: $rtt}")
    reach = {"src": "n1", "dst": "n2", "layer": "pod", "ok": True, "rtt_ms": float("inf")}
    facts = [sysctl("n1", "a\x00b", 0), Fact("reach", "n1", reach)]
    (f,) = infer(rs, facts)
    # The NUL would have ended the text CLIPS reads; an infinite time is no measurement.
    assert f["title"] == "[a\ufffdb] unknown"


def test_placeholders_are_not_format_fields(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: fmt
            fault: fmt
            severity: info
            title: "{node} {0} {node.__class__} {{node}} %s"
            when:
              - sysctl: {node: $node, key: k}
        """,
    )
    (f,) = infer(rs, [sysctl("n1", "k", 1)])
    assert f["title"] == "n1 {0} {node.__class__} {n1} %s"


def test_variable_binds_across_patterns(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: both
            fault: both
            severity: info
            title: t
            when:
              - sysctl: {node: $node, key: a, number: 0}
              - sysctl: {node: $node, key: b, number: 0}
        """,
    )
    facts = [
        sysctl("n1", "a", 0), sysctl("n1", "b", 0),   # both on n1: fires
        sysctl("n2", "a", 0), sysctl("n3", "b", 0),   # split across nodes: must not
    ]
    assert fired(infer(rs, facts), "both") == ["n1"]


def test_same_variable_twice_in_one_pattern(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: self
            fault: self
            severity: info
            title: t
            when:
              - node_status: {node: $x, address: $x}
        """,
    )
    facts = [
        Fact("node_status", "10.0.0.1", {"reachable": True, "address": "10.0.0.1", "reason": None}),
        Fact("node_status", "n2", {"reachable": True, "address": "10.0.0.2", "reason": None}),
    ]
    assert fired(infer(rs, facts), "self") == ["10.0.0.1"]


NEGATION = """
rules:
  - id: no-forward-rules
    fault: no_forward
    severity: info
    title: t
    when:
      - sysctl: {node: $node, key: net.ipv4.ip_forward, number: 1}
      - not: {iptables_rule: {node: $node, chain: FORWARD}}
"""


def rule_fact(node: str, chain: str, position: int = 1, **kw) -> Fact:
    attrs = {
        "table": "filter", "chain": chain, "position": position, "target": "ACCEPT",
        "target_kind": "accept", "unconditional": False, "spec": f"-A {chain} -j ACCEPT",
        "backend": "nf_tables",
    }
    attrs.update(kw)
    return Fact("iptables_rule", node, attrs)


def test_negation(tmp_path):
    rs = ruleset(tmp_path, NEGATION)
    facts = [
        sysctl("n1", "net.ipv4.ip_forward", 1),
        sysctl("n2", "net.ipv4.ip_forward", 1),
        rule_fact("n2", "FORWARD"),
        rule_fact("n1", "INPUT"),
    ]
    assert fired(infer(rs, facts), "no-forward-rules") == ["n1"]


def test_variable_first_bound_in_not_is_local(tmp_path):
    # $chain is bound inside the negation only; the later positive pattern binds its own $chain.
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: local
            fault: local
            severity: info
            title: "{node} {chain}"
            when:
              - sysctl: {node: $node, key: k}
              - not: {iptables_rule: {node: $node, chain: $chain, target_kind: reject}}
              - iptables_rule: {node: $node, chain: $chain, target_kind: accept}
        """,
    )
    facts = [
        sysctl("n1", "k", 1),
        rule_fact("n1", "FORWARD"),
        # n2 has a reject in another chain. Were $chain shared with the later pattern, the
        # negation would only look at FORWARD and n2 would fire; local, it sees any chain.
        sysctl("n2", "k", 1),
        rule_fact("n2", "FORWARD"),
        rule_fact("n2", "INPUT", 2, target_kind="reject"),
    ]
    (f,) = infer(rs, facts)
    assert f["nodes"] == ["n1"]
    assert f["title"] == "n1 FORWARD"


OPERATORS = """
rules:
  - id: op
    fault: op
    severity: info
    title: t
    when:
      - sysctl: {node: $node, key: k, OPERAND}
"""


@pytest.mark.parametrize(
    ("constraint", "matches"),
    [
        ("number: {eq: 2}", {"n2"}),
        ("number: {ne: 2}", {"n1", "n3", "nnull", "nneg"}),
        ("number: {gt: 1}", {"n2", "n3"}),
        ("number: {ge: 2, lt: 3}", {"n2"}),
        ("number: {le: 1}", {"n1", "nneg"}),
        ("number: {lt: 0}", {"nneg"}),
        ("number: {in: [1, 3]}", {"n1", "n3"}),
        ("number: {not_in: [1, 3, null]}", {"n2", "nneg"}),
        ("number: null", {"nnull"}),
        ("value: {contains: '2'}", {"n2"}),
        ("value: {startswith: '-'}", {"nneg"}),
        ("value: {contains: ''}", {"n1", "n2", "n3", "nneg"}),
        ("value: 3", {"n3"}),  # int literal for a str attribute: coerced to "3"
        ("number: '3'", {"n3"}),  # and a numeric string for an int attribute
        ("present: false", {"nnull"}),
    ],
)
def test_operators_and_null_guards(tmp_path, constraint, matches):
    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", constraint))
    facts = [
        sysctl("n1", "k", 1), sysctl("n2", "k", 2), sysctl("n3", "k", 3),
        sysctl("nneg", "k", -5), sysctl("nnull", "k", None, present=False),
        sysctl("other", "other-key", 2),
    ]
    # Numeric and string operators meet a null here: they must not error, just not match.
    assert set(fired(infer(rs, facts), "op") or []) == matches


def test_operator_with_variable_operand_and_guard(tmp_path):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: later
            fault: later
            severity: info
            title: "{first}"
            when:
              - sysctl: {node: $node, key: a, number: $first}
              - sysctl: {node: $node, key: b, number: {gt: $first, ne: $first}}
        """,
    )
    facts = [
        sysctl("n1", "a", 1), sysctl("n1", "b", 5),
        sysctl("n2", "a", 5), sysctl("n2", "b", 1),
        sysctl("n3", "a", None, present=False), sysctl("n3", "b", 9),  # null operand: guarded
    ]
    (f,) = infer(rs, facts)
    assert f["nodes"] == ["n1"]


def test_strenum_and_numpy_like_values_are_normalised(tmp_path):
    class Key(enum.StrEnum):
        K = "k"

    class MyInt(int):
        pass

    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", "number: 7"))
    fact = Fact("sysctl", "n1", {"key": Key.K, "value": "7", "number": MyInt(7), "present": True})
    assert fired(infer(rs, [fact]), "op") == ["n1"]


def test_fact_of_wrong_type_is_an_input_error(tmp_path):
    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", "number: $n"))
    bad = Fact("sysctl", "n1", {"key": "k", "value": "7", "number": "7", "present": True})
    with pytest.raises(InputError, match="fact #0"):
        infer(rs, [bad])


def test_only_matched_kinds_and_candidate_facts_are_asserted(tmp_path):
    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", "number: 7"))
    lay = rs.program.kinds["sysctl"]
    assert set(rs.program.kinds) == {"sysctl"}
    assert lay.filters == [(("key", frozenset({"k"})), ("number", frozenset({7})))]


def test_prefilter_never_drops_a_fact_clips_would_match(tmp_path):
    # Run with and without the Python prefilter: the findings must be identical, or the
    # prefilter dropped a fact CLIPS would have matched (or kept one it should not).
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: ops
            fault: ops
            severity: info
            title: t
            when:
              - sysctl:
                  node: $node
                  key: {startswith: "net.", contains: "a", ne: "net.bad", not_in: [net.ab]}
                  number: {ge: -1, lt: 5}
        """,
    )
    keys = ["net.a", "net.bad", "net.ab", "xnet.a", "net.日本a", "NET.a", "net.", "net.a"]
    facts = [sysctl(f"n{i}", k, i - 1) for i, k in enumerate(keys)]
    facts.append(sysctl("nnull", "net.a", None, present=False))
    facts.append(Fact("sysctl", "nfloat", {"key": "net.a", "value": "2", "number": 2,
                                           "present": True}))
    with_filter = infer(rs, facts)
    rs.program.kinds["sysctl"].filters = None
    without = infer(rs, facts)
    assert with_filter == without
    assert with_filter[0]["nodes"] == ["n0", "n4", "nfloat"]


def test_error_inside_clips_raises(tmp_path):
    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", "number: 7"))
    # A construct whose action fails at run time (adds a string to a number).
    broken = replace(
        rs.program,
        rule_constructs=[
            *rs.program.rule_constructs,
            "(defrule broken (k_sysctl (f_key ?k)) => (bind ?x (+ ?k 1)))",
        ],
    )
    rs.program = broken
    with pytest.raises(EngineError, match="(?s)failed inside CLIPS.*'broken'"):
        infer(rs, [sysctl("n1", "k", 7)])


def test_python_callback_error_raises(tmp_path, monkeypatch):
    rs = ruleset(
        tmp_path,
        """
        rules:
          - id: derive
            when:
              - sysctl: {node: $node, key: k}
            assert:
              - symptom: {node: $node, name: s}
        """,
    )

    def boom(self, *args):
        raise RuntimeError("callback failed")

    monkeypatch.setattr("kubenetdiag.engine.inference._Deriver.__call__", boom)
    with pytest.raises(EngineError, match="callback failed"):
        infer(rs, [sysctl("n1", "k", 1)])


def test_clips_rejecting_a_construct_is_an_error(tmp_path):
    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", "number: 7"))
    rs.program = replace(rs.program, rule_constructs=["(defrule oops (k_sysctl (nope 1)) =>)"])
    # Constructs are built with the routers off (for speed): CLIPS's own message must still
    # reach the author, with the rule's file and line.
    with pytest.raises(EngineError, match=r"(?s)rejected rule \S+ \(.*:\d+\).*nope"):
        infer(rs, [])


def test_nul_in_rule_string_is_refused(tmp_path):
    with pytest.raises(RuleErrors, match="NUL"):
        ruleset(tmp_path, OPERATORS.replace("OPERAND", 'value: "a\\0b"'))


def test_a_fact_clips_cannot_read_is_an_engine_error_not_a_silent_gap(tmp_path, monkeypatch):
    """CLIPS reads the facts with its routers off and skips what it cannot parse without a
    word: were the quoting ever wrong, the run must fail rather than miss a fact."""
    from kubenetdiag.engine import inference

    rs = ruleset(tmp_path, OPERATORS.replace("OPERAND", "number: 7"))
    monkeypatch.setattr(inference, "clips_string", lambda v: '"' + v + '"')  # no escaping
    facts = [sysctl("n1", "k", 7), sysctl('n2") (f_bogus 1', "k", 7)]
    with pytest.raises(EngineError, match="read 1 of the 2 facts"):
        infer(rs, facts)
