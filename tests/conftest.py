"""Shared fixtures. The network lab is opt-in per test (not autouse): most tests need no root."""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from kubenetdiag_lab import Lab, missing_requirements

# No property test has a time limit per example (a timing assertion in disguise: a busy CI
# machine fails it), and in CI the examples are drawn from a fixed seed, so a red run is one
# anyone can reproduce and a green one cannot turn red on a re-run of the same commit. Local
# runs keep exploring new examples.
settings.register_profile("knd", deadline=None)
settings.register_profile("knd-ci", deadline=None, derandomize=True, database=None)
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
settings.load_profile("knd-ci" if IN_CI else "knd")

# Distinct from the CLI's default "knd" so a test run never tears down a lab someone brought up
# by hand, and distinct from the per-test prefixes in test_lab.py.
# KUBENETDIAG_TEST_LAB_PREFIX lets two test runs share a machine without tearing down each
# other's lab.
# Each pytest-xdist worker brings up labs of its own (session fixtures are per worker), so the
# second worker's labs carry its number: gw1's vxlan lab is "kndtest1", next to gw0's "kndtest".
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
SESSION_LAB_PREFIX = os.environ.get("KUBENETDIAG_TEST_LAB_PREFIX", "kndtest") + (
    "" if _WORKER in ("", "0") else _WORKER)


def _lab_group(text: str) -> str | None:
    """The lab tests fall in two groups, about even in time: the modules that also use the
    calico-bgp or host-gw labs, and the rest. Each group runs in one worker, in order, so a
    lab is never built twice at once and the other CNI modes' labs come up in one worker
    only; the two groups run side by side (their labs have different prefixes), a third
    worker runs the other tests meanwhile."""
    if "pytest.mark.lab" not in text:
        return None
    return "lab-cni" if re.search(r"\b(calico_lab|hostgw_lab)\b", text) else "lab"


# Decided by module, in the controller, which sees node ids only; xdist's own loadgroup cannot
# be used: it renames items through a field pytest 9 no longer reads.
LAB_GROUPS = {p.name: group for p in Path(__file__).parent.glob("test_*.py")
              if (group := _lab_group(p.read_text(encoding="utf-8")))}


def lab_group(nodeid: str) -> str | None:
    """The group a test runs in, None outside them. The VXLAN mechanisms of
    test_lab_mechanisms (148 cases; 87 took about 400 s) need only the session lab, which both
    groups bring up: two in five of them go to the other group, which evens the two groups out
    (measured: 930 s against 590 s before). Chosen by a hash of the test's id, so a case stays
    in its group from run to run."""
    group = LAB_GROUPS.get(Path(nodeid.split("::", 1)[0]).name)
    if (group == "lab-cni" and "::test_vxlan_mechanism_" in nodeid
            and zlib.crc32(nodeid.encode()) % 5 < 2):
        return "lab"
    return group


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class LabGroupsApart(LoadScopeScheduling):
        # The two groups go one to each of two workers: scopes are handed out largest first
        # (loadscopereorder, on by default) and the lab groups are by far the largest.
        def _split_scope(self, nodeid: str) -> str:
            return lab_group(nodeid) or nodeid

    return LabGroupsApart(config, log)


# The lab tests spend most of their time waiting on real components (a lease to expire, a
# kube-proxy to sync), so the suite runs one worker more than there are lab groups: the third
# takes the other tests while the lab groups wait, instead of after them. On a two-core
# machine that worker gives way: its tests are CPU-bound, and a lab test starved of CPU
# overruns the waits it times. A group is one unit, handed out first, and a worker is given
# other tests only once its group is nearly done, so lowering a worker's priority at its
# first test outside the groups never slows a lab test. Nor does taking this worker's labs
# down then (their session teardown finds them gone): no lab test of its own is left, and
# their idle control planes would take CPU from every test still to run. In a run of a few
# tests, where a group can be as small as the other units, a worker may be handed a group
# after other tests: its labs then come back up and its priority back to normal first.
_YIELDED = False
_LABS_UP: list[Lab] = []  # the session labs this process brought up
_TAKEN_DOWN: list[Lab] = []


@pytest.fixture(autouse=True)
def _give_way_to_the_lab_groups(request: pytest.FixtureRequest) -> None:
    global _YIELDED
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    in_a_group = lab_group(request.node.nodeid) is not None
    if in_a_group and _YIELDED:
        while _TAKEN_DOWN:
            instance = _TAKEN_DOWN.pop()
            instance.up()
            _LABS_UP.append(instance)
        if os.geteuid() == 0:  # only root may raise a priority, and only root runs a lab
            os.nice(-10)
        _YIELDED = False
    elif not in_a_group and not _YIELDED:
        for instance in _LABS_UP:
            instance.down()
            _TAKEN_DOWN.append(instance)
        _LABS_UP.clear()
        os.nice(10)
        _YIELDED = True


@pytest.fixture(scope="session")
def lab_requirements() -> None:
    """Skip (not fail) where the lab cannot run: not root, or sshd/ip/iptables missing."""
    reason = missing_requirements()
    if reason:
        pytest.skip(f"network lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab(lab_requirements: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-node lab shared by the whole session, healthy at the start of every test that
    leaves it healed (inject inside `with lab.injected(...)` or heal in a finally)."""
    yield from _fresh_lab(Lab(tmp_path_factory.mktemp("lab"), nodes=2, prefix=SESSION_LAB_PREFIX))


def _mode_lab(tmp_path_factory: pytest.TempPathFactory, cni_mode: str, suffix: str,
              network_policy: str = "none") -> Iterator[Lab]:
    yield from _fresh_lab(Lab(tmp_path_factory.mktemp(f"lab-{suffix}"), nodes=2,
                              prefix=f"{SESSION_LAB_PREFIX}{suffix}"[:12], cni_mode=cni_mode,
                              network_policy=network_policy))


def _fresh_lab(instance: Lab) -> Iterator[Lab]:
    # A crashed earlier session may have left namespaces (and sshd) with this prefix.
    instance.down()
    try:
        instance.up()
        _LABS_UP.append(instance)
        yield instance
    finally:
        instance.down()


@pytest.fixture(scope="session")
def hostgw_lab(lab_requirements: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Lab]:
    """A 2-node flannel-host-gw lab (the session `lab` is flannel-vxlan)."""
    yield from _mode_lab(tmp_path_factory, "flannel-host-gw", "gw")


@pytest.fixture(scope="session")
def calico_lab(lab_requirements: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Lab]:
    """A 2-node calico-bgp lab (bird2 per node); skipped where bird is not installed."""
    reason = missing_requirements("calico-bgp")
    if reason:
        pytest.skip(f"calico lab unavailable: {reason}")
    yield from _mode_lab(tmp_path_factory, "calico-bgp", "bgp")


@pytest.fixture(scope="session")
def nft_lab(lab_requirements: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-node flannel-vxlan lab whose kube-proxy runs in nftables mode; skipped where
    kube-proxy could not (kernel before 5.13, no nft 1.0.1+)."""
    reason = missing_requirements(proxy_mode="nftables")
    if reason:
        pytest.skip(f"nftables-mode lab unavailable: {reason}")
    yield from _fresh_lab(Lab(tmp_path_factory.mktemp("lab-nft"), nodes=2,
                              prefix=f"{SESSION_LAB_PREFIX}nft"[:12], proxy_mode="nftables"))


@pytest.fixture(scope="session")
def netpol_lab(lab_requirements: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Lab]:
    """A 2-node flannel-vxlan lab whose NetworkPolicies are enforced: kube-router's policy
    controller in every node (`lab up --network-policy kube-router`)."""
    reason = missing_requirements("flannel-vxlan", network_policy="kube-router")
    if reason:
        pytest.skip(f"kube-router lab unavailable: {reason}")
    yield from _mode_lab(tmp_path_factory, "flannel-vxlan", "np", network_policy="kube-router")
