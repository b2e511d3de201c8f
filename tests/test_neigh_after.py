"""The neighbour entries nobody answered, read after the checks (probes/active/neigh_after)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import example, section
from kubenetdiag.probes.active.neigh_after import NEIGH_AFTER

FIXTURES = Path(__file__).parent / "fixtures" / "active"


def _after(text: str, rc: int = 0) -> list[Fact]:
    return NEIGH_AFTER.parse(section("active.neigh_after", text, rc), None, example())


def test_unanswered_entries_become_facts_and_the_others_do_not():
    # as the lab's node printed it, a gateway nothing holds asked for on eth0
    got = _after((FIXTURES / "neigh_after_gateway.txt").read_text())
    assert [(f.kind, f.attrs["ip"], f.attrs["dev"], f.attrs["state"]) for f in got] == [
        ("neighbor_unanswered", "198.18.0.248", "eth0", "INCOMPLETE"),
        ("neighbor_unanswered", "10.244.2.7", "cni0", "FAILED")]
    # nothing unanswered: no fact and no complaint
    assert _after("knd-done\n") == []


def test_no_ip_or_a_listing_cut_short_says_so_instead_of_all_answered():
    [missing] = _after("kubenetdiag: ip: command not found\n", 127)
    assert (missing.kind, missing.attrs["status"]) == ("probe_status", "missing_tool")
    [refused] = _after('msg Object "neigh" is unknown, try "ip help".\n', 1)
    assert (refused.attrs["status"], refused.attrs["reason"]) == (
        "failed", 'Object "neigh" is unknown, try "ip help".')
    [cut] = _after("198.18.0.248 dev eth0 FAILED\n")  # no end mark: the output was cut
    assert cut.attrs["status"] == "failed"


def test_an_ip_that_ignores_the_state_filter_still_gives_only_unanswered_entries(tmp_path):
    # the node's shell runs the command; an ip that lists every entry whatever `nud` says
    # (as old iproute2 with one filter only) must not turn answered neighbours into facts
    (tmp_path / "neigh").write_text(
        "198.18.0.13 dev eth0 lladdr 6e:cd:35:7d:19:73 REACHABLE\n"
        "198.18.0.248 dev eth0 FAILED\n"
        "10.244.1.0 dev flannel.1 lladdr ae:ec:2f:a5:fd:9d PERMANENT\n")
    script = f"ip() {{ cat {tmp_path}/neigh; }}; " + NEIGH_AFTER.after_command({})
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    got = _after(proc.stdout)
    assert [(f.attrs["ip"], f.attrs["state"]) for f in got] == [("198.18.0.248", "FAILED")]
