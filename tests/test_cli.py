"""The command line as a user meets it: bad input is refused before any work, with file, line
and a hint; bundles from elsewhere are validated; the shipped example renders offline."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kubenetdiag
from kubenetdiag.bundle import read_bundle, write_bundle
from kubenetdiag.cli import main
from kubenetdiag.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "bundles").glob("*/meta.json"))


def test_bad_inventory_exits_2_naming_file_and_line(tmp_path, capsys):
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n    node1:\n      ansible_host: 198.18.0.11\n"
                   "      ansible_port: [22\n")
    bundle = tmp_path / "bundle"
    assert main(["diagnose", "--inventory", str(inv), "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert f"{inv}:" in err
    assert not bundle.exists()  # the run did not start


def test_bad_rule_dir_exits_2_before_collection(tmp_path, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - id: x\n    colour: red\n")
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all:\n  hosts:\n    node1:\n      ansible_host: 198.18.0.11\n")
    code = main(["diagnose", "--inventory", str(inv), "--rules-dir", str(rules),
                 "--bundle", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{rules / 'bad.yaml'}:" in err
    assert not (tmp_path / "b").exists()


def test_unknown_report_suffix_is_refused(tmp_path, capsys):
    assert main(["analyze", str(EXAMPLES[0].parent), "--report", str(tmp_path / "r.pdf")]) == 2
    assert ".html, .json, .md or .txt" in capsys.readouterr().err


def test_rules_lint_reports_file_line_and_exits_2(tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text("rules:\n  - id: a\n    fault: ip_forward_disabled\n    when: [\n")
    assert main(["rules", "lint", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:" in err and "YAML" in err


def test_rules_lint_unknown_field_names_its_line(tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text(
        "rules:\n"
        "  - id: site-rule\n"
        "    fault: ip_forward_disabled\n"
        "    severity: critical\n"
        "    title: t\n"
        "    sevrity: high\n"
        "    when:\n"
        "      - sysctl: {key: net.ipv4.ip_forward, number: 0}\n"
    )
    assert main(["rules", "lint", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:6" in err and "sevrity" in err


def test_shipped_rules_lint_clean_and_rules_test_runs_a_file(capsys):
    # Every shipped rule test is run once, by test_engine_rules; here the command itself, on
    # one shipped file given as a path, as an author checks the file they edit.
    assert main(["rules", "lint"]) == 0
    one = Path(kubenetdiag.__file__).parent / "rules" / "kernel" / "ip_forward.yaml"
    assert main(["rules", "test", str(one)]) == 0
    out = capsys.readouterr().out
    assert "PASS ip-forward-disabled" in out and " 0 failed" in out


def test_rules_list_json_names_the_first_faults(capsys):
    assert main(["rules", "list", "--format", "json"]) == 0
    faults = {r["fault"] for r in json.loads(capsys.readouterr().out)}
    assert {"ip_forward_disabled", "bridge_nf_call_iptables_disabled",
            "forward_chain_reject"} <= faults


@pytest.mark.parametrize("meta", EXAMPLES, ids=lambda p: p.parent.name)
def test_shipped_example_renders_offline(meta, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(meta.parent, bundle)
    html = tmp_path / "report.html"
    code = main(["analyze", str(bundle), "--report", str(html), "--format", "json"])
    assert code == 1
    report = json.loads((bundle / "report.json").read_text())
    assert report["findings"] and all(f["root_cause"] is not None for f in report["findings"])
    page = html.read_text()
    for f in report["findings"]:
        assert f["fault"] in page


def test_damaged_bundle_is_refused_with_file(tmp_path):
    write_bundle(tmp_path / "b", {"started_at": "t", "finished_at": "t", "transport": "ssh",
                                  "inventory": None},
                 [{"name": "../../etc/x", "address": "a", "reachable": False, "error": "e",
                   "duration_s": 0.1, "sections": []}])
    # the hostile node name stayed inside the bundle, as the only file there
    (node_file,) = (tmp_path / "b" / "nodes").iterdir()
    assert "/" not in node_file.name and node_file.suffix == ".json"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    meta, records = read_bundle(tmp_path / "b")
    assert records[0]["name"] == "../../etc/x"
    node_file.write_text('{"name": "x", "reachable": "yes"}')
    with pytest.raises(InputError) as exc:
        read_bundle(tmp_path / "b")
    assert exc.value.file == str(node_file)


def test_collect_refuses_to_overwrite_a_bundle(tmp_path, capsys):
    write_bundle(tmp_path / "b", {"started_at": "t", "finished_at": "t", "transport": "local",
                                  "inventory": None}, [])
    assert main(["collect", "--local", "-o", str(tmp_path / "b"), "--quiet"]) == 2
    assert "already holds a bundle" in capsys.readouterr().err


def test_a_diagnose_that_fails_before_writing_leaves_no_empty_bundle_dir(tmp_path, monkeypatch,
                                                                          capsys):
    """The default bundle directory is made in the working directory; a run that fails before
    it writes a file (here the collection) must not leave it behind, empty, for the next SRE
    to wonder about."""
    from kubenetdiag import pipeline

    def fail(*_args, **_kwargs):
        raise InputError("cannot read the kubeconfig", hint="check --kubeconfig")

    monkeypatch.setattr(pipeline, "collect", fail)
    monkeypatch.chdir(tmp_path)
    assert main(["diagnose", "--local", "--quiet"]) == 2
    assert "cannot read the kubeconfig" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_diagnose_local_runs_end_to_end(tmp_path, capsys):
    code = main(["diagnose", "--local", "--bundle", str(tmp_path / "b"), "--format", "json",
                 "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == report["summary"]["exit_code"]
    assert report["nodes"][0]["reachable"] is True
    assert any(f["kind"] == "sysctl" for f in
               json.loads((tmp_path / "b" / "facts.json").read_text())["facts"])


def test_the_guide_example_site_rule_lints_tests_and_fires(capsys, tmp_path):
    site = ROOT / "docs" / "examples" / "site-rules"
    assert main(["rules", "lint", str(site)]) == 0
    assert main(["rules", "test", str(site)]) == 0
    bundle = tmp_path / "b"
    shutil.copytree(EXAMPLES[0].parent, bundle)
    capsys.readouterr()
    main(["analyze", str(bundle), "--rules-dir", str(site), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    # the lab nodes run Linux 6.x with somaxconn 4096: the site rule must stay quiet there
    assert "somaxconn_low" not in {f["fault"] for f in report["findings"]}
    assert report["rules"]["count"] > 4


def test_an_error_naming_hostile_text_reaches_the_terminal_escaped():
    from kubenetdiag.errors import for_terminal

    shown = for_terminal("node\x1b]8;;http://x\x07evil\x1b]8;;\x07 \u202eab\x9b\nnext\tline")
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "\x9b" not in shown
    assert "\\x1b]8;;http://x\\x07evil" in shown
    assert "\nnext\tline" in shown  # layout characters stay what they are


def test_rules_list_into_a_pipe_is_tab_separated_one_rule_a_line(tmp_path):
    """Not a terminal: a header and one line per rule, tab-separated, for cut and awk; a site
    rule's title with a tab and a terminal escape in it stays one clean cell."""
    site = tmp_path / "site"
    site.mkdir()
    example = (ROOT / "docs" / "examples" / "site-rules" / "somaxconn-low.yaml").read_text()
    start = example.index("title:")
    end = example.index("\n    when:", start)
    (site / "r.yaml").write_text(example[:start] + 'title: "low\\tsomaxconn \\e[31mred"'
                                 + example[end:])
    proc = subprocess.run([sys.executable, "-m", "kubenetdiag", "rules", "list",
                           "--rules-dir", str(site)], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert lines[0] == "id\tfault\tseverity\ttitle\tfile"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 5 for r in rows) and len(rows) > 100
    [mine] = [r for r in rows if r[4] == str(site / "r.yaml")]
    assert "\x1b" not in proc.stdout and mine[3].startswith("low somaxconn")


def test_output_cut_by_a_closed_pipe_is_not_a_crash():
    """`rules list | head -1`: the reader stops early; exit 141 as a shell reports SIGPIPE,
    and no traceback (it used to be an internal error, exit 4)."""
    proc = subprocess.Popen([sys.executable, "-m", "kubenetdiag", "rules", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    # a one-page pipe (F_SETPIPE_SZ), set while the interpreter still starts: the listing does
    # not fit in it, so the writer is still writing when the reader goes away
    fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)
    proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err
