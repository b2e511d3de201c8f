"""The inference engine: YAML rules compiled to CLIPS, run over facts, producing findings.

    ruleset = load_ruleset([Path("site-rules")], disable=["some-rule"])
    findings = infer(ruleset, facts)
"""

from kubenetdiag.errors import RuleErrors

from .inference import EngineError, infer
from .loader import lint_paths, load_ruleset
from .model import Rule
from .rulefiles import shipped_dir
from .ruleset import RuleSet
from .ruletest import TestResult, run_tests

SHIPPED_RULES_DIR = shipped_dir()

__all__ = [
    "SHIPPED_RULES_DIR",
    "EngineError",
    "Rule",
    "RuleErrors",
    "RuleSet",
    "TestResult",
    "infer",
    "lint_paths",
    "load_ruleset",
    "run_tests",
]
