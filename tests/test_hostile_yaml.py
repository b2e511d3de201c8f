"""Inventories and rule files built to hurt: nested aliases that expand to a billion values, an
alias that contains itself, nesting thousands deep (which crashed libyaml's composer), a FIFO
named as the file. Each is exit 2 naming the file and line, quickly, in a process that stays
alive (docs/hardening.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetdiag.cli import main


def _laughs(levels: int = 9) -> str:
    """A 300-byte YAML document whose aliases name 9**9 values."""
    out = "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels):
        out += f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]\n"
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    # a subprocess: a crash inside libyaml or a blocked read must fail the test, not end it
    return subprocess.run([sys.executable, "-m", "kubenetdiag", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})


def _inventory(tmp_path: Path, extra: str) -> Path:
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n    node1:\n      ansible_host: 198.18.0.11\n" + extra)
    return inv


@pytest.mark.parametrize("extra, message, line", [
    ("  vars:\n    bomb:\n" + "".join("      " + ln + "\n" for ln in _laughs().splitlines()),
     "expands to more than", None),
    ("  vars:\n    loop: &a [1, *a]\n", "an alias refers to a value that contains it", 6),
    ("  vars:\n    deep: " + "[" * 50_000 + "]" * 50_000 + "\n", "levels deep", 6),
])
def test_a_hostile_inventory_is_exit_2_with_file_and_line(tmp_path, extra, message, line):
    inv = _inventory(tmp_path, extra)
    proc = _cli("diagnose", "--inventory", str(inv), "--bundle", str(tmp_path / "b"))
    assert proc.returncode == 2, proc.stderr
    # the line of the value itself, or for the aliases, of the one that crossed the limit
    assert re.search(rf"{re.escape(str(inv))}:{line or '[0-9]+'}: ", proc.stderr), proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b").exists()


def test_a_group_vars_bomb_is_refused(tmp_path):
    inv = _inventory(tmp_path, "")
    (tmp_path / "group_vars").mkdir()
    gv = tmp_path / "group_vars" / "all.yaml"
    gv.write_text(_laughs())
    proc = _cli("diagnose", "--inventory", str(inv), "--bundle", str(tmp_path / "b"))
    assert proc.returncode == 2 and f"{gv}:" in proc.stderr
    assert "expands to more than" in proc.stderr


def test_a_rule_file_bomb_is_refused_by_lint(tmp_path):
    rules = tmp_path / "site.yaml"
    rules.write_text(_laughs() + "rules: []\n")
    proc = _cli("rules", "lint", str(rules))
    assert proc.returncode == 2 and f"{rules}:" in proc.stderr
    assert "expands to more than" in proc.stderr


def test_a_fifo_named_as_the_inventory_does_not_hang(tmp_path, capsys):
    fifo = tmp_path / "hosts.yaml"
    os.mkfifo(fifo)
    assert main(["diagnose", "--inventory", str(fifo), "--bundle", str(tmp_path / "b")]) == 2
    assert "not a regular file" in capsys.readouterr().err


RULE = """\
rules:
  - id: site-check
    fault: site_fault
    severity: warning
    title: {en: "TITLE on {node}", zh-CN: "{node} 上的 site"}
    when:
      - sysctl: {node: $node, key: {in: KEYS}, number: 0}
"""


def test_an_in_list_too_long_for_clips_is_a_lint_error_not_a_crash(tmp_path):
    rules = tmp_path / "site.yaml"
    keys = "[" + ", ".join(f"k{i}" for i in range(100_000)) + "]"
    rules.write_text(RULE.replace("TITLE", "site").replace("KEYS", keys))
    proc = _cli("rules", "lint", str(rules))
    assert proc.returncode == 2, proc.stderr[-500:]
    assert f"{rules}:7: " in proc.stderr and "lists 100,000 values; at most 1,000" in proc.stderr


def test_rules_list_shows_a_hostile_title_as_text(tmp_path):
    rules = tmp_path / "site.yaml"
    title = "[link=https://evil.example/]click[/link] \x1b]8;;https://evil.example/\x1b\\\\x"
    rules.write_text(RULE.replace("TITLE", title.replace("\\", "\\\\").replace("\x1b", "\\e"))
                     .replace("KEYS", "[k]"))
    proc = _cli("rules", "list", "--rules-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "site-check" in ln)
    assert "[link=https://evil.example/]click[/link]" in line
    assert "\x1b" not in proc.stdout and "\\x1b]8;;" in line


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "ten"])
def test_a_timeout_that_is_not_a_positive_number_is_exit_2(tmp_path, value, capsys):
    inv = _inventory(tmp_path, "")
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "--inventory", str(inv), "--connect-timeout", value])
    assert exc.value.code == 2
    assert "--connect-timeout" in capsys.readouterr().err


def test_inference_stops_at_its_budget_naming_the_rules(monkeypatch, capsys):
    # a budget a real run never reaches (docs/hardening.md); made tiny here to reach it
    from kubenetdiag.engine import inference

    monkeypatch.setattr(inference, "MAX_FIRINGS", 3)
    monkeypatch.setattr(inference, "_STEP", 1)
    example = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"
    assert main(["analyze", str(example), "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert "the rules fired 3 times" in err and "without coming to rest" in err
    assert re.search(r"most: [a-z0-9-]+ \(\S+\.yaml:\d+, \d+ times\)", err), err
