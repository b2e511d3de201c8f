"""Where a lab keeps its files under its work dir (keys, inventory, lab.json, per-node files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubenetdiag_lab.nodehost import NodeFiles
from kubenetdiag_lab.sshd import SshdFiles

DEFAULT_WORKDIR = Path("/tmp/kubenetdiag-lab")


@dataclass(frozen=True)
class LabPaths:
    workdir: Path

    @property
    def state(self) -> Path:
        return self.workdir / "lab.json"

    @property
    def inventory(self) -> Path:
        return self.workdir / "hosts.yaml"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def api_objects(self) -> Path:
        # what apisync wrote to the apiserver last: the next sync's baseline
        return self.workdir / "controlplane" / "applied-objects.json"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.workdir / "authorized_keys"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def node_files(self, node: str) -> NodeFiles:
        return NodeFiles(self.workdir / "nodes" / node)

    def sshd_files(self, node: str) -> SshdFiles:
        # the same directory as node_files: a node's sshd keeps its files beside the node's own
        return SshdFiles(self.workdir / "nodes" / node)
