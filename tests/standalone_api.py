"""A real control plane (etcd + kube-apiserver) on a small network of its own, for tests that
need the Kubernetes API but not a whole lab: `<prefix>-sw` (a bridge), `<prefix>-client`
(198.18.0.2, where the collector runs) and `<prefix>-cp` (198.18.0.3). Removed again even when
a test fails; skipped, not failed, where it cannot run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kubenetdiag.collect import cluster as cc
from kubenetdiag_lab import components
from kubenetdiag_lab import controlplane as cpm
from kubenetdiag_lab.netns import add_netns, delete_netns, ip_batch, list_netns

CLIENT_ADDRESS = "198.18.0.2"


def prefix_for(suffix: str) -> str:
    """A namespace prefix of its own per test module, under the run's lab prefix."""
    return (os.environ.get("KUBENETDIAG_TEST_LAB_PREFIX", "kndtest") + suffix)[:12]


def client_netns(prefix: str) -> str:
    return f"{prefix}-client"


def skip_unless_possible() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the lab's control plane needs root and iproute2")
    reason = components.missing(components.CONTROL_PLANE)
    if reason:
        pytest.skip(reason)


def _remove_network(prefix: str) -> list[str]:
    return cpm.delete_cp_netns(prefix) + delete_netns([client_netns(prefix), f"{prefix}-sw"])


@contextmanager
def control_plane(prefix: str, workdir: Path, apiserver_args: Sequence[str] = ()
                  ) -> Iterator[cpm.ControlPlane]:
    """The network and a started control plane; everything is gone afterwards."""
    skip_unless_possible()
    switch, client = f"{prefix}-sw", client_netns(prefix)
    _remove_network(prefix)  # what a crashed earlier run may have left
    cp = cpm.ControlPlane(workdir, cpm.cp_netns(prefix), apiserver_args=list(apiserver_args))
    try:
        add_netns([switch, client])
        ip_batch(switch, ["link set lo up", "link add br0 type bridge", "link set br0 up",
                          f"link add swc type veth peer name eth0 netns {client}",
                          "link set swc master br0 up"])
        ip_batch(client, ["link set lo up", f"addr add {CLIENT_ADDRESS}/24 dev eth0",
                          "link set eth0 up"])
        cpm.add_cp_netns(prefix, switch)
        cp.start()
        yield cp
    finally:
        try:
            cp.stop()
        finally:
            left = _remove_network(prefix)
        assert left == [], left
        assert not [n for n in list_netns() if n.startswith(f"{prefix}-")]


def collect_from(netns: str, kubeconfig: Path, **kw: Any) -> dict:
    """The product's collector, run inside `netns` (the only place that reaches the API)."""
    def run() -> dict:
        api, source = cc.load_client(cc.ApiTarget(str(kubeconfig)))
        try:
            return cc.collect_cluster(api, source, **kw)
        finally:
            api.close()

    return in_netns(netns, run)


def in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    return cpm.in_netns(netns, fn, timeout=120)
