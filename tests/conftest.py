"""Shared fixtures. The network lab is opt-in per test (not autouse): most tests need no root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenetdiag_lab import Lab, missing_requirements

# Distinct from the CLI's default "knd" so a test run never tears down a lab someone brought up
# by hand, and distinct from the per-test prefixes in test_lab.py.
# KUBENETDIAG_TEST_LAB_PREFIX lets two test runs share a machine without tearing down each
# other's lab.
SESSION_LAB_PREFIX = os.environ.get("KUBENETDIAG_TEST_LAB_PREFIX", "kndtest")


# The test modules that build labs (they mark tests `lab`): all of their tests run in one
# pytest-xdist worker, in order, so two workers never build labs of one prefix at once, while
# the other worker runs the rest. Decided by module, in the controller, which sees node ids
# only; xdist's own loadgroup cannot be used: it renames items through a field pytest 9 no
# longer reads.
LAB_MODULES = frozenset(p.name for p in Path(__file__).parent.glob("test_*.py")
                        if "pytest.mark.lab" in p.read_text(encoding="utf-8"))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class LabTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "lab" if Path(nodeid.split("::", 1)[0]).name in LAB_MODULES else nodeid

    return LabTestsTogether(config, log)


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
