"""Property-based fuzzing of rule files: a real rule file with any one value replaced by any
YAML value, or any YAML document at all, is either clean or a list of problems with file and
line from `rules lint`; never an exception, never a crash of CLIPS (docs/hardening.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile_inputs import replace_at
from kubenetdiag.engine import lint_paths

ROOT = Path(__file__).resolve().parent.parent
RULE_FILE = ROOT / "src" / "kubenetdiag" / "rules" / "firewall" / "forward_chain_reject.yaml"
ORIGINAL = yaml.safe_load(RULE_FILE.read_text(encoding="utf-8"))

_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["$node", "$x", "{node}", "in", "not", "ne"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=10) | st.sampled_from(["when", "not", "in", "gt", "fault", "node"]),
        inner, max_size=4),
    max_leaves=20,
)
_FUZZ = settings(max_examples=100,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _lint(tmp_path: Path, text: str) -> None:
    f = tmp_path / "site.yaml"
    f.write_text(text, encoding="utf-8")
    for problem in lint_paths([f], with_shipped=False):  # raises nothing
        assert problem.file == str(f), problem
        assert problem.message


@_FUZZ
@given(path=st.lists(st.integers(0, 30), min_size=1, max_size=7), value=_VALUE)
def test_a_real_rule_file_with_one_value_changed(tmp_path, path, value):
    _lint(tmp_path, yaml.safe_dump(replace_at(copy.deepcopy(ORIGINAL), path, value),
                                   allow_unicode=True))


_SCALAR = (st.integers(-5, 70000) | st.text(max_size=12) | st.booleans() | st.none()
           | st.sampled_from(["$node", "$peer", "$other", "{node}", "eth0", "10.244.0.0/16",
                              "8472", "$", "$$", "{", "}", "\\", '"', "(", ")", ";"]))


@_FUZZ
@given(rule=st.integers(0, 10), path=st.lists(st.integers(0, 30), min_size=1, max_size=5),
       value=_SCALAR | st.dictionaries(st.sampled_from(["in", "not_in", "gt", "lt", "ne",
                                                        "bind", "contains"]), _SCALAR
                                       | st.lists(_SCALAR, max_size=3), max_size=2))
def test_a_pattern_or_test_fact_with_one_value_changed(tmp_path, rule, path, value):
    """Values inside `when` and the rule's own test facts: these pass the schema and reach the
    compiler, CLIPS and the rule's tests."""
    doc = copy.deepcopy(ORIGINAL)
    target = doc["rules"][rule % len(doc["rules"])]
    part = "when" if path[0] % 2 else "tests"
    target[part] = replace_at(target[part], path[1:] or [0], value)
    _lint(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


@_FUZZ
@given(value=_VALUE)
def test_any_yaml_document_as_a_rule_file(tmp_path, value):
    _lint(tmp_path, yaml.safe_dump(value, allow_unicode=True))
