"""Property-based fuzzing of what `analyze` reads from a bundle: any meta.json, node file or
cluster.json that hypothesis can build (valid JSON of any shape, mutations of real files, any
text as probe output) ends in a report or in exit 2 naming the file; never a traceback.
Bounded: a fixed number of examples per property, no deadline per example."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hostile_inputs import replace_at
from kubenetdiag import cli
from kubenetdiag.cli import main
from kubenetdiag.errors import EXIT_INTERNAL

ROOT = Path(__file__).resolve().parent.parent
# the example has no active phase; the recorded nft bundle has one on every node
BASES = {"example": ROOT / "examples" / "bundles" / "lab-three-faults",
         "active": ROOT / "tests" / "fixtures" / "bundles" / "lab-nft-healthy"}
FILES = ["meta.json", "nodes/node1.json", "cluster.json"]
TARGETS = [(b, f) for b in BASES for f in FILES]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=30,
)
_FUZZ = settings(max_examples=100,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def original() -> dict[tuple[str, str], object]:
    return {(b, f): json.loads((BASES[b] / f).read_text()) for b, f in TARGETS}


@pytest.fixture(scope="module", autouse=True)
def _rules_loaded_once():
    """The shipped rules compiled once for the module: each example then costs an analysis,
    not a compilation."""
    ruleset = cli.load_ruleset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "load_ruleset", lambda *a, **k: ruleset)
        yield


def _run(tmp_path: Path, base: str, name: str, content: str, capsys) -> tuple[int, str]:
    target = tmp_path / "b"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(BASES[base], target, ignore=shutil.ignore_patterns("facts.json", "report.json"))
    (target / name).write_text(content, encoding="utf-8", errors="surrogatepass")
    capsys.readouterr()
    code = main(["analyze", str(target), "--format", "json", "--lang", "en"])
    err = capsys.readouterr().err
    return code, err


def _check(code: int, err: str, name: str) -> None:
    assert code != EXIT_INTERNAL and "Traceback" not in err, err[-2000:]
    if code == 2:
        assert name.split("/")[-1] in err or "bundle" in err, err


@_FUZZ
@given(target=st.sampled_from(TARGETS), value=_JSON)
def test_any_json_document_in_place_of_a_bundle_file(tmp_path, capsys, target, value):
    code, err = _run(tmp_path, *target, json.dumps(value), capsys)
    _check(code, err, target[1])


@_FUZZ
@given(target=st.sampled_from(TARGETS),
       path=st.lists(st.integers(0, 50), min_size=1, max_size=8), value=_JSON)
# found by this test: a null among the active plan's DNS servers crashed a check's targets
@example(target=("example", "nodes/node1.json"), path=[0, 44, 1, 0], value=None)
# and a null DNS name in the plan reached a fact unread
@example(target=("example", "nodes/node1.json"), path=[0, 2, 32], value=None)
def test_a_real_bundle_file_with_one_value_changed(tmp_path, capsys, original, target, path,
                                                   value):
    code, err = _run(tmp_path, *target, json.dumps(replace_at(original[target], path, value)),
                     capsys)
    _check(code, err, target[1])


@_FUZZ
@given(base=st.sampled_from(sorted(BASES)), active=st.booleans(), section=st.integers(0, 40),
       stdout=st.text(max_size=400), exit_code=st.one_of(st.none(), st.integers(-300, 300)))
def test_any_probe_output_gives_a_report(tmp_path, capsys, original, base, active, section,
                                         stdout, exit_code):
    rec = json.loads(json.dumps(original[(base, "nodes/node1.json")]))
    sections = rec["active"]["sections"] if active and "active" in rec else rec["sections"]
    sec = sections[section % len(sections)]
    sec["stdout"], sec["exit_code"] = stdout, exit_code
    code, err = _run(tmp_path, base, "nodes/node1.json", json.dumps(rec), capsys)
    assert code in (0, 1), err[-2000:]
