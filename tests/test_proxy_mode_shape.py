"""`lab up --proxy-mode`: the mode is part of the lab's shape (lab.json, the kube-proxy
ConfigMap, each node's config), without root or a running lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenetdiag_lab import kubeproxy
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.topology import Topology, build


def test_the_mode_round_trips_through_lab_json_and_reaches_kube_proxys_config():
    shape = build("kndx", 2, proxy_mode="nftables")
    again = Topology.from_dict(shape.to_dict())
    assert again.proxy_mode == "nftables" and again == shape
    cfg = kubeproxy.config(shape, shape.nodes[0], Path("/k"))
    assert cfg["mode"] == "nftables" and cfg["nftables"]["masqueradeBit"] == 14
    # a lab.json written before the option: iptables
    old = shape.to_dict()
    del old["kube_proxy_mode"]
    assert Topology.from_dict(old).proxy_mode == "iptables"
    assert kubeproxy.config(build("kndx", 1), build("kndx", 1).nodes[0], Path("/k"))[
        "mode"] == "iptables"


def test_an_unknown_mode_is_refused():
    with pytest.raises(LabError, match="kube-proxy mode"):
        build("kndx", 2, proxy_mode="ipvs")


def test_the_iptables_reader_finds_dnats_and_rejects():
    saved = "\n".join([
        '-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "default/web:http '
        'cluster IP" -m tcp --dport 80 -j KUBE-SVC-X',
        '-A KUBE-SERVICES -d 10.96.0.21/32 -p tcp -m comment --comment "default/c:http has no '
        'endpoints" -m tcp --dport 80 -j REJECT',
        '-A KUBE-SEP-Y -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT '
        '--to-destination 10.244.2.3:8080',
    ])
    assert kubeproxy._iptables_programmed(saved) == {"default/web:http": {"10.244.2.3:8080"},
                                                     "default/c:http": set()}
    assert kubeproxy._nftables_programmed("not json") == {}
