"""A bundle from anywhere, and output paths typed in a hurry: what `analyze` does with a bundle
built to hurt (links, FIFOs, devices, huge or deeply nested files, NaN, lone surrogates) and with
report and bundle paths that would overwrite evidence. Always exit 2 naming the file, or a
report; never a traceback, a hang, or a write outside the output paths (docs/hardening.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetdiag import bundle as bundle_mod
from kubenetdiag.bundle import new_bundle_dir, prepare_dir, write_text_atomic
from kubenetdiag.cli import main
from kubenetdiag.errors import InputError, for_terminal

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bundles" / "lab-three-faults"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    out = tmp_path / "b"
    shutil.copytree(EXAMPLE, out)
    for f in ("facts.json", "report.json"):
        (out / f).unlink(missing_ok=True)
    return out


def _node_file(bundle: Path) -> Path:
    return sorted((bundle / "nodes").glob("*.json"))[0]


def _analyze(bundle: Path, *extra: str) -> int:
    return main(["analyze", str(bundle), "--format", "json", *extra])


def test_links_named_like_the_tools_files_do_not_redirect_its_writes(bundle, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in ("facts.json.tmp", "report.json.tmp", ".facts.json.tmp", "facts.json",
                 "report.json"):
        (bundle / name).symlink_to(victim)
    assert _analyze(bundle) == 1
    assert victim.read_text() == "precious\n"
    # the links named like our outputs were replaced by the files themselves
    for name in ("facts.json", "report.json"):
        assert not (bundle / name).is_symlink()
        assert json.loads((bundle / name).read_text())["schema"]


@pytest.mark.parametrize("make, what", [
    (lambda p: p.symlink_to("/dev/zero"), "symbolic link"),
    (lambda p: os.mkfifo(p), "not a regular file"),
])
def test_a_node_file_that_is_a_link_or_a_fifo_is_refused(bundle, capsys, make, what):
    node = _node_file(bundle)
    node.unlink()
    make(node)
    assert _analyze(bundle) == 2
    err = capsys.readouterr().err
    assert str(node) in err and what in err and "Traceback" not in err


def test_a_fifo_as_meta_json_does_not_hang(bundle):
    (bundle / "meta.json").unlink()
    os.mkfifo(bundle / "meta.json")
    # a subprocess: were it to block on the FIFO, the timeout ends it and the test fails
    proc = subprocess.run([sys.executable, "-m", "kubenetdiag", "analyze", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "meta.json is not a regular file" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_node_in_a_bundle_is_not_read(bundle, capsys):
    node = _node_file(bundle)
    node.unlink()
    os.mknod(node, 0o600 | 0o020000, os.makedev(1, 5))  # a character device: /dev/zero
    assert _analyze(bundle) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_size_is_counted_while_reading_not_trusted(bundle, capsys, monkeypatch):
    monkeypatch.setattr(bundle_mod, "MAX_NODE_FILE", 1024)
    assert _analyze(bundle) == 2
    assert "larger than" in capsys.readouterr().err


def test_a_bundle_with_no_nodes_is_refused_not_reported_healthy(bundle, capsys):
    meta = json.loads((bundle / "meta.json").read_text())
    meta["nodes"] = []
    (bundle / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(bundle / "nodes")
    (bundle / "nodes").mkdir()
    assert _analyze(bundle) == 2
    assert "holds no nodes" in capsys.readouterr().err


@pytest.mark.parametrize("text, what", [
    ('{"duration_s": NaN}', "NaN is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}".decode("latin-1"), "not UTF-8"),
])
def test_broken_json_is_exit_2_with_the_file(bundle, capsys, text, what):
    node = _node_file(bundle)
    node.write_bytes(text.encode("latin-1") if what == "not UTF-8" else text.encode())
    assert _analyze(bundle) == 2
    err = capsys.readouterr().err
    assert what in err and str(node) in err and "Traceback" not in err


def test_lone_surrogates_in_probe_output_still_give_a_report(bundle, tmp_path, capsys):
    node = _node_file(bundle)
    rec = json.loads(node.read_text())
    rec["sections"][0]["stdout"] += "\udc80 \ud800"
    node.write_text(json.dumps(rec))  # ensure_ascii: the file holds "\udc80" escapes
    html = tmp_path / "r.html"
    assert _analyze(bundle, "--report", str(html)) == 1
    assert html.stat().st_size > 0 and json.loads(capsys.readouterr().out)["findings"]


def test_report_paths_that_would_destroy_evidence_are_refused(bundle, tmp_path, capsys):
    assert _analyze(bundle, "--report", str(bundle / "incident.html")) == 2
    assert "inside the bundle" in capsys.readouterr().err
    assert not (bundle / "incident.html").exists()
    assert _analyze(bundle, "--report", str(bundle / "nodes" / "x.json")) == 2
    (tmp_path / "adir.html").mkdir()
    assert _analyze(bundle, "--report", str(tmp_path / "adir.html")) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_failed_report_write_keeps_the_old_report(bundle, tmp_path, capsys, monkeypatch):
    report = tmp_path / "incident.html"
    report.write_text("the good report of the last run\n")

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_mod.os, "replace", full)
    monkeypatch.setattr(bundle_mod, "write_json", lambda *a: None)  # facts.json: not the point
    import kubenetdiag.pipeline as pipeline
    monkeypatch.setattr(pipeline, "write_json", lambda *a: None)
    assert _analyze(bundle, "--report", str(report)) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(report) in err
    assert report.read_text() == "the good report of the last run\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_replaces_a_link_never_its_target(tmp_path):
    target = tmp_path / "etc-shadow"
    target.write_text("root:x\n")
    (tmp_path / "out.json").symlink_to(target)
    write_text_atomic(tmp_path / "out.json", "{}\n")
    assert target.read_text() == "root:x\n"
    assert (tmp_path / "out.json").read_text() == "{}\n"


def test_a_bundle_is_never_written_over_other_files(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="is not empty"):
        prepare_dir(busy)
    (tmp_path / "link").symlink_to(busy)
    with pytest.raises(InputError, match="not a directory"):
        prepare_dir(tmp_path / "link")
    prepare_dir(tmp_path / "fresh")  # a new directory is made
    prepare_dir(tmp_path / "fresh")  # and an empty one is fine
    assert (busy / "notes.txt").read_text() == "mine\n"


def test_two_runs_in_one_second_get_two_bundle_directories(tmp_path):
    first, second = new_bundle_dir(tmp_path), new_bundle_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith("kubenetdiag-")


def test_surrogates_and_escapes_reach_the_terminal_as_text():
    assert for_terminal("a\udc80b\x1b[31m") == "a\\udc80b\\x1b[31m"


def test_nan_printed_by_a_node_gives_json_a_browser_accepts(bundle, tmp_path, capsys):
    # `rtt_ms=nan` in an active DNS section: float() takes it; JSON has no NaN
    node = _node_file(bundle)
    rec = json.loads(node.read_text())
    rec["sections"][0]["stdout"] = "1e999 nan\n" + rec["sections"][0]["stdout"]
    node.write_text(json.dumps(rec))
    out = tmp_path / "r.json"
    assert _analyze(bundle, "--report", str(out)) == 1

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))

    strict(out.read_text())
    strict((bundle / "facts.json").read_text())
    strict(capsys.readouterr().out)
    from kubenetdiag.bundle import json_text
    assert json_text({"a": [float("nan"), float("inf"), 1.5]}) == '{"a": [null, null, 1.5]}'


@pytest.mark.parametrize("name, what", [
    ("node9", "which meta.json does not list"),
    ("node1", "a second node file for node 'node1'"),
])
def test_a_node_file_the_metadata_does_not_list_is_refused(bundle, capsys, name, what):
    rec = json.loads((bundle / "nodes" / "node2.json").read_text())
    rec["name"] = name
    extra = bundle / "nodes" / "zz-merged.json"
    extra.write_text(json.dumps(rec))
    assert _analyze(bundle) == 2
    err = capsys.readouterr().err
    assert what in err and str(extra) in err


def test_a_report_name_with_markup_is_named_as_written(bundle, tmp_path, capsys):
    """`--report '[red]x.html'`: the file written and the name printed are the same."""
    target = tmp_path / "[red]x.html"
    assert main(["analyze", str(bundle), "--report", str(target)]) == 1
    out, err = capsys.readouterr()
    assert target.is_file()
    flat = "".join((out + err).split())  # the console wraps long paths
    assert f"reportwrittento{target}" in flat and f"Fullreport:{target}" in flat


def test_a_negative_node_duration_is_exit_2_with_the_file(bundle, capsys):
    # found by tests/test_fuzz_bundles.py: the report refused it after the analysis, as an
    # internal error (exit 4)
    node = _node_file(bundle)
    rec = json.loads(node.read_text())
    rec["duration_s"] = -1
    node.write_text(json.dumps(rec))
    assert _analyze(bundle) == 2
    err = capsys.readouterr().err
    assert str(node) in err and "duration_s" in err and "Traceback" not in err
