"""The cross-zone latency, full-link and unanswered-connection faults, each way of making them
proven at the network level without the diagnoser (as test_lab_mechanisms does for the others): the
mechanism really does what its description claims, and heal restores every node exactly.

Run one at a time on a small machine: `-k zones` or `-k unanswered`.
"""

from __future__ import annotations

import re
import statistics
import time

import pytest

from kubenetdiag_lab import Lab
from kubenetdiag_lab.faults import CACHE_PORT, SPREAD_SERVICE
from kubenetdiag_lab.topology import OUTSIDE_HOST, OUTSIDE_PORT
from test_lab_faults import api, client_pod
from test_lab_mechanisms import proven

pytestmark = pytest.mark.lab

# The rule's floor for a cross-zone round trip (rules/service/zones.yaml). The healthy lab must
# stay far below it, and the fault far above.
RULE_FLOOR_MS = 5.0


def rtts(lab: Lab, src: str, dst: str, count: int = 10) -> list[float]:
    """Each reply's round-trip time in ms, from node `src` to node `dst`'s underlay address."""
    address = lab.topology.node(dst).address
    out = lab.node_exec(src, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1",
                              address]).stdout
    return [float(ms) for ms in re.findall(r"time=([\d.]+) ms", out)]


def test_zones_healthy_lab_round_trips_are_far_below_the_rule_floor(lab):
    """What the threshold was chosen against: namespace RTTs jitter, by a fraction of a ms."""
    samples = rtts(lab, "node1", "node2", count=20) + rtts(lab, "node2", "node1", count=20)
    assert len(samples) >= 36
    assert statistics.median(samples) < RULE_FLOOR_MS / 10, samples


def _cross_zone_slow(lab: Lab) -> None:
    # both directions cross the slow link: one way the request queues, the other the reply
    for src, dst in (("node1", "node2"), ("node2", "node1")):
        samples = rtts(lab, src, dst)
        assert len(samples) >= 8, samples  # delayed, not lost
        # the queue's fill follows TCP's sawtooth (10 to 60 ms measured): twice the floor
        assert statistics.median(samples) >= 2 * RULE_FLOOR_MS, samples
    # the Service the fault adds: endpoints on both nodes, so in both zones, no hints
    svc = api(lab, f"/api/v1/namespaces/default/services/{SPREAD_SERVICE}")
    assert "service.kubernetes.io/topology-mode" not in (
        svc["metadata"].get("annotations") or {})
    slices = api(lab, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                      f"?labelSelector=kubernetes.io/service-name%3D{SPREAD_SERVICE}")["items"]
    zones = {e.get("zone") for s in slices for e in s.get("endpoints") or []}
    assert zones == {"zone-a", "zone-b"}, zones


def test_zones_inter_zone_link_slow_and_healed_exactly(lab):
    proven(lab, "cross_zone_latency", "node2", {"via": "switch"}, _cross_zone_slow)
    assert statistics.median(rtts(lab, "node1", "node2")) < RULE_FLOOR_MS


def _tx_bytes(lab: Lab, node: str) -> int:
    return int(lab.node_exec(node, ["cat", "/sys/class/net/eth0/statistics/tx_bytes"]).stdout)


def _uplink_full(lab: Lab) -> None:
    # node2 sends at its shaped rate (8 Mbit/s), and what else it sends, the replies to
    # node1's pings among it, waits in the queue
    before, started = _tx_bytes(lab, "node2"), time.monotonic()
    time.sleep(2)
    rate = (_tx_bytes(lab, "node2") - before) * 8 / (time.monotonic() - started)
    assert 7_000_000 <= rate <= 9_000_000, rate
    # a full queue also drops what does not fit: some replies are lost (3 of 10 in one CI
    # run), those that come back waited in it
    samples = rtts(lab, "node1", "node2")
    assert len(samples) >= 5 and statistics.median(samples) >= 2 * RULE_FLOOR_MS, samples


def test_a_full_uplink_delays_everything_the_node_sends_and_heals_exactly(lab):
    proven(lab, "link_saturated", "node2", {"via": "uplink"}, _uplink_full)
    assert statistics.median(rtts(lab, "node1", "node2")) < RULE_FLOOR_MS


def _unanswered(lab: Lab) -> None:
    table = lab.node_exec("node2", ["conntrack", "-L", "-d", OUTSIDE_HOST]).stdout
    waiting = [line for line in table.splitlines()
               if f"dport={CACHE_PORT} " in line and "[UNREPLIED]" in line]
    assert len(waiting) >= 20, table[-2000:]
    # the declared port still answers: only the workload's other port goes unanswered
    pod = client_pod(lab, "node2")
    assert lab.netprog(pod, "tcp", OUTSIDE_HOST, str(OUTSIDE_PORT)).returncode == 0


@pytest.mark.parametrize("via", ["filtered", "stuck"])
def test_unanswered_connections_fill_the_nodes_table_and_heal_clears_them(lab, via):
    proven(lab, "connections_unanswered", "node2", {"via": via}, _unanswered)
    left = lab.node_exec("node2", ["conntrack", "-L", "-d", OUTSIDE_HOST]).stdout
    assert f"dport={CACHE_PORT} " not in left, left
