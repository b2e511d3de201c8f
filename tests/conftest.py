"""Shared fixtures. The network lab is opt-in per test (not autouse): most tests need no root."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kubenetdiag_lab import Lab, missing_requirements

# Distinct from the CLI's default "knd" so a test run never tears down a lab someone brought up
# by hand, and distinct from the per-test prefixes in test_lab.py.
# KUBENETDIAG_TEST_LAB_PREFIX lets two test runs share a machine without tearing down each
# other's lab.
SESSION_LAB_PREFIX = os.environ.get("KUBENETDIAG_TEST_LAB_PREFIX", "kndtest")


# Fixtures that build a lab: a test using one (or marked `lab`) runs in the one worker that
# holds every lab, so two workers never build labs of the same prefix at once.
LAB_FIXTURES = frozenset({"lab", "hostgw_lab", "calico_lab", "nft_lab", "netpol_lab",
                          "lab_requirements"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("lab") or LAB_FIXTURES & set(
                getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("lab"))


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
