"""`ip -j` and the text form it falls back to (CentOS 7's iproute has no JSON) give the same
facts, on the lab's real kernel in every CNI mode and on the multipath and IPv6-next-hop routes
BIRD installs for Calico (created here in a scratch namespace of the lab's prefix).

With KUBENETDIAG_RECORD_FIXTURES=1 the outputs are also written to tests/fixtures/probes as
`lab-<mode>-<node>-{json,text}.txt`; test_parsers_every_probe.py checks those recordings
without root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kubenetdiag.probes import BY_NAME, Section

pytestmark = pytest.mark.lab

FIX = Path(__file__).parent / "fixtures" / "probes"
PROBES = ("routes", "links", "ip_rule")
# The text fallback exactly as a node without JSON runs it: `ip -j` fails there.
NO_JSON = 'ip() { for a in "$@"; do [ "$a" = -j ] && return 1; done; command ip "$@"; }; '


def facts(probe: str, stdout: str, code: int = 0) -> list[str]:
    spec = BY_NAME[probe]
    parsed = spec.parse(Section(probe, spec.command, code, 0.0, stdout, ""), "node1")
    return sorted(json.dumps([f.kind, f.attrs], sort_keys=True) for f in parsed)


def both_forms(shell, probe: str) -> tuple[str, str]:
    command = BY_NAME[probe].command
    as_json = shell(command)
    as_text = shell(NO_JSON + command)
    # the first header says which form the probe took
    assert as_json.split("\n", 1)[0].endswith(" json")
    assert as_text.split("\n", 1)[0].endswith(" text")
    return as_json, as_text


def _record(name: str, probe: str, as_json: str, as_text: str) -> None:
    if os.environ.get("KUBENETDIAG_RECORD_FIXTURES") == "1":
        (FIX / probe / f"{name}-json.txt").write_text(as_json)
        (FIX / probe / f"{name}-text.txt").write_text(as_text)


@pytest.mark.parametrize("which", ["lab", "hostgw_lab", "calico_lab"])
def test_json_and_text_forms_agree_on_every_cni_mode(request, which):
    lab = request.getfixturevalue(which)
    for node in lab.nodes:
        runner = lab.runners.node(node)
        for probe in PROBES:
            as_json, as_text = both_forms(lambda c, r=runner: r.shell(c).stdout, probe)
            from_json, from_text = facts(probe, as_json), facts(probe, as_text)
            assert from_json, (which, node.name, probe)
            assert from_json == from_text, (which, node.name, probe)
            if node == lab.nodes[0]:
                _record(f"lab-{lab.topology.cni}-{node.name}", probe, as_json, as_text)


@pytest.fixture
def scratch_ns(lab_requirements):
    name = f"kndipj{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


BIRD_ROUTES = """
ip link set lo up
ip link add d0 type veth peer name d0p
ip link add d1 type veth peer name d1p
for i in d0 d0p d1 d1p; do ip link set "$i" up; done
ip addr add 198.18.5.11/24 dev d0
ip addr add 198.18.6.11/24 dev d1
ip -6 addr add fd00::11/64 dev d0 nodad
ip route add 10.244.1.0/26 proto bird metric 32 \\
    nexthop via 198.18.5.12 dev d0 weight 1 nexthop via 198.18.6.12 dev d1 weight 2
ip route add 10.244.2.0/26 via inet6 fd00::12 dev d0 proto bird
ip route add blackhole 10.244.0.0/26 proto bird
ip route add 10.244.3.0/24 via 198.18.5.13 dev d0 onlink table 100
ip rule add from 10.244.0.0/16 lookup 100 pref 100
"""


def test_multipath_and_ipv6_next_hops_on_this_kernel(scratch_ns):
    def shell(command: str) -> str:
        return subprocess.run(["ip", "netns", "exec", scratch_ns, "sh", "-c", command],
                              capture_output=True, text=True, check=True).stdout

    setup = subprocess.run(["ip", "netns", "exec", scratch_ns, "sh", "-ec", BIRD_ROUTES],
                           capture_output=True, text=True)
    if "via inet6" in setup.stderr or "Error" in setup.stderr:
        pytest.skip(f"this kernel cannot hold the routes: {setup.stderr.strip()}")
    assert setup.returncode == 0, setup.stderr
    for probe in PROBES:
        as_json, as_text = both_forms(shell, probe)
        assert facts(probe, as_json) == facts(probe, as_text), probe
    routes = [json.loads(f)[1] for f in facts("routes", both_forms(shell, "routes")[0])]
    by_dst: dict[str, list[dict]] = {}
    for r in routes:
        by_dst.setdefault(r["dst"], []).append(r)
    assert [(r["gateway"], r["dev"], r["weight"], r["paths"]) for r in by_dst["10.244.1.0/26"]
            ] == [("198.18.5.12", "d0", 1, 2), ("198.18.6.12", "d1", 2, 2)]
    [v6] = by_dst["10.244.2.0/26"]
    assert (v6["gateway"], v6["dev"]) == ("fd00::12", "d0")
    [onlink] = by_dst["10.244.3.0/24"]
    assert (onlink["table"], onlink["onlink"]) == ("100", True)
    rules = [json.loads(f)[1] for f in facts("ip_rule", both_forms(shell, "ip_rule")[0])]
    assert any(r.get("table") == "100" and r.get("priority") == 100 for r in rules), rules
