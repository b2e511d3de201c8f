"""Per-destination conntrack counts: the node-side command (run here with a stand-in
`conntrack` on PATH, as the node's sh would run it) and its parser, on the outputs of
conntrack-tools 1.4.4 and 1.4.6, /proc/net/nf_conntrack, a missing tool, a refused read, a
listing cut short by its time limit, and a table far bigger than what may leave the node."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubenetdiag.facts import parse
from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active import conntrack_dest as ct
from kubenetdiag.probes.active.common import example, section
from kubenetdiag.probes.active.script import LINE_LIMIT

FIX = Path(__file__).parent / "fixtures" / "active"
ENDPOINT = {"address": "203.0.113.10", "role": "endpoint", "name": "203.0.113.10:3306"}
VIP = {"address": "10.96.0.20", "role": "dns_service", "name": "10.96.0.20"}


def run_on_node(tmp_path: Path, target: dict, conntrack: str | None, *,
                proc: Path | None = None, limit: str = "") -> subprocess.CompletedProcess:
    """The check's command under sh, with `conntrack` a stand-in script (None: not installed)
    and /proc/net/nf_conntrack replaced by `proc` (None: absent)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if conntrack is not None:
        tool = bin_dir / "conntrack"
        tool.write_text("#!/bin/sh\n" + conntrack)
        tool.chmod(0o755)
    for name in ("awk", "cat", "sleep", "timeout"):  # the node's basic tools, nothing more
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to(subprocess.check_output(["which", name], text=True).strip())
    cmd = ct._command(example().plan, target).replace(
        "/proc/net/nf_conntrack", str(proc or tmp_path / "absent"))
    env = {"PATH": str(bin_dir), "__to": limit, "LC_ALL": "C"}
    return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env,
                          timeout=60)


def facts_of(cp: subprocess.CompletedProcess, target: dict) -> list[Fact]:
    return ct.parse(section("active.ct.ep.0", cp.stdout, cp.returncode), target, example())


def listing(fixture: str) -> str:
    return f"cat {FIX / fixture}\n"


def test_conntrack_1_4_6_counts_unanswered_connects_by_port(tmp_path: Path) -> None:
    cp = run_on_node(tmp_path, ENDPOINT, listing("conntrack_L_1.4.6.txt"))
    [f] = facts_of(cp, ENDPOINT)
    assert f.kind == "conntrack_dest"
    a = f.attrs
    # 3 SYN_SENT to 6379 and one UDP query unanswered; 3306 and the ping were answered
    assert (a["entries"], a["unreplied"], a["syn_sent"], a["established"]) == (7, 4, 3, 1)
    assert a["unreplied_port"] == 6379 and a["unreplied_to"] == "203.0.113.10"
    assert a["table_source"] == "conntrack" and a["complete"] is True
    assert a["unreplied_pct"] == 57.1


def test_conntrack_1_4_4_vip_names_the_endpoint_it_was_dnated_to(tmp_path: Path) -> None:
    cp = run_on_node(tmp_path, VIP, listing("conntrack_L_1.4.4_vip.txt"))
    [f] = facts_of(cp, VIP)
    assert (f.attrs["entries"], f.attrs["unreplied"]) == (3, 2)
    assert f.attrs["unreplied_to"] == "10.244.1.9"  # not the VIP, not the answering 10.244.3.4
    assert f.attrs["unreplied_port"] == 80


def test_proc_fallback_counts_only_the_original_destination(tmp_path: Path) -> None:
    cp = run_on_node(tmp_path, ENDPOINT, None, proc=FIX / "nf_conntrack_proc.txt")
    [f] = facts_of(cp, ENDPOINT)
    # the third line has 203.0.113.10 only as its source: a connection from it, not to it
    assert (f.attrs["entries"], f.attrs["unreplied"], f.attrs["syn_sent"]) == (1, 1, 1)
    assert f.attrs["table_source"] == "proc"


def test_no_conntrack_and_no_proc_table_is_a_missing_tool(tmp_path: Path) -> None:
    cp = run_on_node(tmp_path, ENDPOINT, None)
    [f] = facts_of(cp, ENDPOINT)
    assert f.kind == "probe_status" and f.attrs["status"] == "missing_tool"
    assert "203.0.113.10:3306" in f.attrs["blocks"]


def test_conntrack_without_root_is_permission_denied_not_an_empty_table(tmp_path: Path) -> None:
    cp = run_on_node(tmp_path, ENDPOINT, (
        "echo 'conntrack v1.4.5 (conntrack-tools): Operation failed: Operation not permitted'"
        " >&2; exit 1\n"))
    [f] = facts_of(cp, ENDPOINT)
    assert f.kind == "probe_status" and f.attrs["status"] == "permission_denied"
    unreadable = "kubenetdiag: /proc/net/nf_conntrack: Permission denied\ntotal 0 0 0 0\n"
    [g] = ct.parse(section("active.ct.ep.0", unreadable), ENDPOINT, example())
    assert g.attrs["status"] == "permission_denied"


def test_conntrack_error_of_its_own_is_a_failed_probe(tmp_path: Path) -> None:
    cp = run_on_node(tmp_path, ENDPOINT, (
        "echo 'conntrack v1.4.6 (conntrack-tools): Operation failed: Protocol not supported'"
        " >&2; exit 1\n"))
    [f] = facts_of(cp, ENDPOINT)
    assert f.kind == "probe_status" and f.attrs["status"] == "failed"
    assert "Protocol not supported" in f.attrs["reason"]


def test_a_listing_cut_short_is_a_lower_bound(tmp_path: Path) -> None:
    slow = listing("conntrack_L_1.4.6.txt") + "sleep 5\n"
    cp = run_on_node(tmp_path, ENDPOINT, slow, limit="timeout 1")
    [f] = facts_of(cp, ENDPOINT)
    assert f.attrs["complete"] is False and f.attrs["entries"] == 7


def test_a_huge_table_leaves_the_node_as_a_few_counts(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    line = ("tcp      6 117 SYN_SENT src=10.244.3.2 dst=203.0.113.10 sport={s} dport={p} "
            "[UNREPLIED] src=203.0.113.10 dst=198.18.0.13 sport={p} dport={s} mark=0 use=1\n")
    with big.open("w") as out:
        for i in range(60_000):
            out.write(line.format(s=10_000 + i % 50_000, p=1_000 + i % 400))
    cp = run_on_node(tmp_path, ENDPOINT, f"cat {big}\n")
    assert len(cp.stdout.encode()) < LINE_LIMIT  # one line of the script, never the entries
    [f] = facts_of(cp, ENDPOINT)
    # the totals count every entry, not only the groups printed
    assert (f.attrs["entries"], f.attrs["unreplied"], f.attrs["syn_sent"]) == (60_000,) * 3


def test_targets_are_the_dns_servers_and_declared_ips_once_each() -> None:
    plan = dict(example().plan)
    plan["dns"] = [{"server": "10.244.1.2", "kind": "pod", "pod": "coredns-0"},
                   {"server": "10.96.0.10", "kind": "service", "pod": None}]
    plan["endpoints"] = [
        {"target": "203.0.113.10:3306", "host": "203.0.113.10", "port": 3306, "by": "ip"},
        {"target": "203.0.113.10:6379", "host": "203.0.113.10", "port": 6379, "by": "ip"},
        {"target": "db.example.invalid:5432", "host": "db.example.invalid", "port": 5432,
         "by": "name"}]  # by name: the address it resolves to is not known when planning
    got = ct._targets(plan)  # type: ignore[arg-type]
    assert [(s, t["address"], t["role"], t["name"]) for s, t in got] == [
        ("dns.1", "10.96.0.10", "dns_service", "10.96.0.10"),
        ("ep.0", "203.0.113.10", "endpoint", "203.0.113.10:3306"),
        ("dns.0", "10.244.1.2", "dns_pod", "coredns-0")]
    # a section's suffix maps back to its target from the plan, not from the node's output
    assert ct._resolve(plan, "ep.0")["address"] == "203.0.113.10"  # type: ignore[arg-type]


def test_a_node_lists_at_most_a_few_destinations_the_vip_and_endpoints_first() -> None:
    plan = dict(example().plan)
    plan["dns"] = [{"server": f"10.244.{i}.2", "kind": "pod", "pod": f"coredns-{i}"}
                   for i in range(4)] + [{"server": "10.96.0.10", "kind": "service",
                                          "pod": None}]
    plan["endpoints"] = [{"target": f"203.0.113.{i}:80", "host": f"203.0.113.{i}",
                          "port": 80, "by": "ip"} for i in range(1, 17)]
    got = ct._targets(plan)  # type: ignore[arg-type]
    assert len(got) == ct.MAX_TARGETS
    assert [t["role"] for _, t in got] == ["dns_service"] + ["endpoint"] * (ct.MAX_TARGETS - 1)


def test_a_bundles_section_becomes_the_fact_of_the_planned_target(tmp_path: Path) -> None:
    """The section id indexes the plan: the fact names the endpoint the plan declared."""
    node_plan = dict(example().plan)
    node_plan["dns"] = []
    node_plan["endpoints"] = [{"target": "203.0.113.10:3306", "host": "203.0.113.10",
                               "port": 3306, "by": "ip"}]
    cp = run_on_node(tmp_path, ENDPOINT, listing("conntrack_L_1.4.6.txt"))
    facts = parse.active_facts("node3", {"plan": node_plan, "sections": [
        {"probe": "active.ct.ep.0", "exit_code": cp.returncode, "stdout": cp.stdout}]})
    [f] = [f for f in facts if f.kind == "conntrack_dest"]
    assert (f.node, f.attrs["dst"], f.attrs["target"]) == ("node3", "203.0.113.10",
                                                          "203.0.113.10:3306")
    assert "e 3 tcp SYN_SENT 1 6379 203.0.113.10" in f.source.excerpt  # the evidence shown
