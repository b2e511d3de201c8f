"""The plugin model of everything that runs on a node: discovery, the order the script runs
them in, every module's doctested sample, the registry lookup of active sections, the
transports' one contract, and which probes a bundle's collection ran."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import kubenetdiag.probes
import kubenetdiag.probes.active
from kubenetdiag.collect.local import LocalTransport
from kubenetdiag.collect.ssh import Connector, SshOptions
from kubenetdiag.collect.transport import ScriptResult
from kubenetdiag.facts.parse import facts_from_records, probes_ran
from kubenetdiag.inventory import Host
from kubenetdiag.probes import PROBES, probe_names
from kubenetdiag.probes.active import check_for, checks
from kubenetdiag.probes.active.common import example
from kubenetdiag.probes.active.script import jobs, window_check
from kubenetdiag.probes.base import DEFAULT_ORDER, discover

ROOT = Path(__file__).parent.parent


def _plugin_modules() -> list[str]:
    passive = [m.__name__ for m, _ in discover(kubenetdiag.probes, "PROBE")]
    active = [m.__name__ for m, _ in discover(kubenetdiag.probes.active, "CHECKS")]
    return passive + active


def test_passive_probes_run_in_their_declared_order():
    # default order, then name; the two-sample probes last: their first samples are the
    # script's preludes, and the other probes' run time is their interval
    assert [p.name for p in PROBES] == [
        "bgp", "cni", "cni_results", "conntrack", "host", "ip_rule", "ipsets", "iptables",
        "iptables_legacy", "ipvs", "kernel", "links", "modules", "nftables", "overlay",
        "processes", "routes", "sockets", "sysctl", "sysctl_files", "tc", "xfrm",
        "pod_counters", "counters", "socket_reads",
    ]
    assert all(p.order == DEFAULT_ORDER for p in PROBES[:-3])
    assert all(p.order > DEFAULT_ORDER and p.sampling for p in PROBES[-3:-1])
    # it reads again what the sockets probe found, after the second samples' top-up
    assert PROBES[-1].order > PROBES[-2].order and not PROBES[-1].sampling
    assert probe_names() == [p.name for p in PROBES]


def test_active_checks_run_in_their_declared_order():
    assert [c.name for c in checks()] == [
        "ping", "mtu", "dns", "dns.outside", "http", "tcp", "nodeport", "pod.ping", "pod.link",
        "pod.route", "own.node_to_pod", "own.pod_to_node", "pod.dns", "pod.tcp", "capture", "ct",
        "unavailable",
        "counters_after", "xfrm_after", "neigh_after",
    ]


def test_every_module_with_a_plugin_is_discovered():
    # a module of the package that mentions PROBE = / CHECKS = is found by the walk
    for package, attribute in ((kubenetdiag.probes, "PROBE"),
                               (kubenetdiag.probes.active, "CHECKS")):
        declared = {
            info.name for info in pkgutil.iter_modules(package.__path__)
            if not info.ispkg and f"\n{attribute} = " in
            (Path(package.__path__[0]) / f"{info.name}.py").read_text()
        }
        found = {m.__name__.rsplit(".", 1)[1] for m, _ in discover(package, attribute)}
        assert found == declared


@pytest.mark.parametrize("module", _plugin_modules())
def test_module_shows_a_sample_of_its_output_as_a_doctest(module):
    mod = importlib.import_module(module)
    tests = [t for t in doctest.DocTestFinder().find(mod) if t.examples]
    assert tests, f"{module} has no doctest showing the output it parses"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{module}: {runner.failures} doctest example(s) failed"


def test_every_planned_section_finds_its_check_and_target():
    ctx = example()
    for check in checks():
        for suffix, target in check.targets(ctx.plan):
            found = check_for("active." + check.section_id(suffix))
            assert found is not None and found[0] is check and found[1] == suffix
            assert check.target(ctx.plan, suffix) == target
    assert [cid for cid, _ in jobs(ctx.plan)] == [
        "ping.pod.0", "ping.underlay.0", "mtu.0.0", "mtu.1.0", "dns.0", "http.0", "tcp.0",
        "nodeport.0", "pod.ping.pod.0", "pod.link", "pod.route", "own.node_to_pod",
        "own.pod_to_node", "pod.dns", "pod.tcp.0", "ct.dns.0",
    ]
    around = window_check(ctx.plan)
    assert around is not None and around[0].name == "capture"


def test_local_transport_returns_a_script_result():
    result = LocalTransport(10).run_script("echo out; echo err >&2; exit 3", limit=1 << 20)
    assert result == ScriptResult("out\n", "err\n", 3, False)
    cut = LocalTransport(10).run_script("printf 'abcdefgh'", limit=4)
    assert (cut.stdout, cut.truncated) == ("abcd", True)


def test_the_connector_hands_out_one_transport_contract_per_host():
    connector = Connector(SshOptions())
    local = connector.for_host(Host("me", "local", connection="local"))
    remote = connector.for_host(Host("node1", "198.18.0.11"))
    for transport in (local, remote):
        assert callable(transport.run_script) and callable(transport.open_stream)
    assert isinstance(local, LocalTransport)
    connector.close()


def _record(name: str, probes: list[str]) -> dict:
    return {"name": name, "address": name, "reachable": True, "error": None,
            "sections": [{"probe": p, "command": "", "exit_code": 0, "stdout": "",
                          "stderr": ""} for p in probes]}


def _did_not_run(facts) -> set[tuple[str, str]]:
    return {(f.node, f.attrs["probe"]) for f in facts
            if f.kind == "probe_status" and f.attrs["reason"] == "the probe did not run"}


def test_a_probe_no_node_answered_for_in_an_old_bundle_is_not_reported_as_not_run():
    records = [_record("n1", ["kernel", "sysctl"]), _record("n2", ["kernel"])]
    assert probes_ran(records) == {"kernel", "sysctl"}
    # sysctl ran on n1, so its absence on n2 is news; the other probes were never run
    assert _did_not_run(facts_from_records(records)) == {("n2", "sysctl")}


def test_the_probes_meta_json_records_are_the_ones_that_ran():
    records = [_record("n1", ["kernel"])]
    facts = facts_from_records(records, probes=["kernel", "host"])
    assert _did_not_run(facts) == {("n1", "host")}
