"""The routes of the pod the active phase entered (probes/active/podroute), and the finding
they make when the pod has no default route."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import example, section
from kubenetdiag.probes.active.podroute import POD_ROUTE

FIXTURES = Path(__file__).parent / "fixtures" / "active"


def _routes(text: str, rc: int = 0) -> list[Fact]:
    return POD_ROUTE.parse(section("active.pod.route", text, rc), None, example("cni-client-1"))


def test_a_flannel_pod_as_the_lab_printed_it_has_its_default_route():
    [fact] = _routes((FIXTURES / "pod_route_flannel.txt").read_text())
    assert fact.kind == "pod_routing"
    assert fact.attrs == {
        "vantage": "cni-client-1", "routes": 3, "default": True, "gateway": "10.244.3.1",
        "listing": "default via 10.244.3.1 dev eth0; 10.244.0.0/16 via 10.244.3.1 dev eth0; "
                   "10.244.3.0/24 dev eth0"}


def test_a_pod_made_without_isDefaultGateway_has_flannels_route_only():
    # recorded in the lab: the pod set up again under a conflist whose delegate lacks it
    [fact] = _routes((FIXTURES / "pod_route_no_default.txt").read_text())
    assert (fact.attrs["routes"], fact.attrs["default"], fact.attrs["gateway"]) == (2, False, None)
    assert fact.attrs["listing"] == "10.244.0.0/16 via 10.244.3.1 dev eth0; 10.244.3.0/24 dev eth0"


def test_calico_busybox_and_an_empty_table_read_the_same_way():
    # Calico's pod: a default route via 169.254.1.1, which the host's proxy ARP answers
    [calico] = _routes("default via 169.254.1.1 dev eth0 \n169.254.1.1 dev eth0 scope link \n"
                       "knd-done\n")
    assert (calico.attrs["default"], calico.attrs["gateway"]) == (True, "169.254.1.1")
    # busybox ip pads with two spaces before src; a default through a device has no gateway
    [busybox] = _routes("default dev eth0 scope link \n"
                        "10.244.1.0/24 dev eth0 scope link  src 10.244.1.2 \nknd-done\n")
    assert (busybox.attrs["default"], busybox.attrs["gateway"]) == (True, None)
    [empty] = _routes("knd-done\n")
    assert (empty.attrs["routes"], empty.attrs["default"], empty.attrs["listing"]) == (
        0, False, "no route at all")


def test_a_line_not_understood_is_shown_and_never_taken_for_no_default_route():
    odd = "10.244.3.0/24 dev eth0 scope link \nsomething new via 10.244.3.1 dev eth0 \nknd-done\n"
    [status] = _routes(odd)
    assert (status.kind, status.attrs["status"], status.attrs["kinds"]) == (
        "probe_status", "partial", None)
    assert "something new via 10.244.3.1" in status.attrs["reason"]
    # with the default route read, the table's facts stand beside the complaint
    status, fact = _routes("default via 10.244.3.1 dev eth0 \n" + odd)
    assert (status.attrs["status"], status.attrs["kinds"]) == ("partial", "")
    assert (fact.kind, fact.attrs["default"]) == ("pod_routing", True)


def test_no_pod_no_ip_a_failure_or_a_cut_listing_is_never_read_as_no_default_route():
    for text, rc, state in (
            ("", 127, "missing_tool"),  # no pod namespace was entered
            ("kubenetdiag: ip: command not found\n", 127, "missing_tool"),
            ("msg RTNETLINK answers: Operation not permitted\n", 1, "failed"),
            ("10.244.3.0/24 dev eth0 proto kernel scope link src 10.244.3.2 \n", 0, "failed")):
        [fact] = _routes(text, rc)
        assert (fact.kind, fact.attrs["status"]) == ("probe_status", state), text
        assert fact.attrs["blocks"] == "the pod's own routes (a pod made without a default route)"


def test_the_command_lists_inside_the_pod_and_only_there(tmp_path):
    # ip inside the pod is `$__inpod ip`; without a pod namespace the check is not run
    (tmp_path / "routes").write_text("10.244.3.0/24 dev eth0 scope link \n")
    fake = f"inpod() {{ [ \"$1\" = ip ] && cat {tmp_path}/routes; }}; ip() {{ :; }}; "
    script = POD_ROUTE.command({}, None)
    inside = subprocess.run(["sh", "-c", fake + "__inpod=inpod; " + script],
                            capture_output=True, text=True, timeout=30)
    [fact] = _routes(inside.stdout, inside.returncode)
    assert (fact.attrs["default"], fact.attrs["listing"]) == (False, "10.244.3.0/24 dev eth0")
    outside = subprocess.run(["sh", "-c", fake + "__inpod=; " + script],
                             capture_output=True, text=True, timeout=30)
    assert outside.returncode == 127
    assert _routes(outside.stdout, outside.returncode)[0].attrs["status"] == "missing_tool"
