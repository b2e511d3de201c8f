"""Translation lint: every text an operator sees must exist in every report language.

A lint problem, not a load error: a site rule written in English only still runs, and its
report falls back to English where a translation is missing.
"""

from __future__ import annotations

from kubenetdiag.errors import InputError

from .model import LANGS, Path_, Rule
from .rulefiles import RuleLocation


def missing_translations(location: RuleLocation, rule: Rule) -> list[InputError]:
    """One problem per title, explanation or remediation text that lacks a report language."""
    missing: list[tuple[Path_, str]] = []
    for key in ("title", "explain"):
        text = rule.texts.get(key)
        if text is not None:
            missing += [((key,), lang) for lang in LANGS if lang not in text]
    for j, step in enumerate(rule.remediate):
        missing += [(("remediate", j, "text"), lang) for lang in LANGS if lang not in step.text]
    return [
        location.error(
            path,
            f"rule {rule.id} has no {lang} text here",
            hint=f"write the text as a mapping {{en: ..., {lang}: ...}}",
        )
        for path, lang in missing
    ]
