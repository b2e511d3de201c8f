"""How the collection is spread over processes: by the inventory's size, bounded by the cores."""

from __future__ import annotations

import doctest
import pickle
from types import MappingProxyType

from kubenetdiag.collect import fleet
from kubenetdiag.collect.ssh import SshOptions
from kubenetdiag.inventory import Host


def test_one_worker_per_200_nodes_at_most_one_per_core() -> None:
    assert [fleet.workers_for(n, cores=4) for n in (1, 200, 201, 500, 5000)] == [1, 1, 2, 3, 4]
    assert fleet.workers_for(5000, cores=1) == 1
    assert doctest.testmod(fleet).failed == 0


def test_a_small_inventory_stays_in_this_process() -> None:
    hosts = [Host(f"n{i}", f"192.0.2.{i}") for i in range(3)]
    assert isinstance(fleet.open_fleet(hosts, SshOptions(), parallel=8, active=False),
                      fleet.InProcess)
    # asked for more workers than hosts: one per host at most, never an empty share
    many = fleet.open_fleet(hosts[:1], SshOptions(), parallel=8, active=False, workers=4)
    assert isinstance(many, fleet.InProcess)


def test_hosts_travel_to_a_worker_with_their_vars() -> None:
    h = Host("n1", "192.0.2.1", port=2222, groups=("k8s",),
             vars=MappingProxyType({"kubenetdiag_endpoints": ["web:80"]}))
    back = pickle.loads(pickle.dumps(h))
    assert back == h and dict(back.vars) == {"kubenetdiag_endpoints": ["web:80"]}
    assert isinstance(back.vars, MappingProxyType)
