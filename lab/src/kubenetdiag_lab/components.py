"""Where the lab's real component binaries are: the versions pinned in lab/components/versions.env
and the cache lab/components/build.sh builds them into.

    ${KUBENETDIAG_COMPONENTS:-/var/cache/kubenetdiag-lab}/<project>-<version>/<binary>

The lab is installed editable from the repository, so versions.env is found relative to this
file. Nothing here builds anything: `missing()` says what is absent and the command that
builds it, and the lab refuses to start with that message.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubenetdiag_lab.errors import LabError

LAB_DIR = Path(__file__).resolve().parents[2]  # lab/ (src/kubenetdiag_lab/components.py)
VERSIONS_ENV = LAB_DIR / "components" / "versions.env"
BUILD_SCRIPT = "lab/components/build.sh"  # as a user types it from the repository root
DEFAULT_CACHE = Path("/var/cache/kubenetdiag-lab")
CACHE_ENV = "KUBENETDIAG_COMPONENTS"

# binary -> (project directory prefix in the cache, versions.env key): build.sh's table.
BINARIES: Mapping[str, tuple[str, str]] = {
    "kube-apiserver": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-controller-manager": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-proxy": ("kubernetes", "KUBERNETES_VERSION"),
    "etcd": ("etcd", "ETCD_VERSION"),
    "flanneld": ("flannel", "FLANNEL_VERSION"),
    "coredns": ("coredns", "COREDNS_VERSION"),
    "kube-router": ("kube-router", "KUBE_ROUTER_VERSION"),
    "knd-ipvs-proxier": ("knd-ipvs-proxier", "IPVS_PROXIER_VERSION"),
    "bridge": ("cni-plugins", "CNI_PLUGINS_VERSION"),
    "host-local": ("cni-plugins", "CNI_PLUGINS_VERSION"),
    "portmap": ("cni-plugins", "CNI_PLUGINS_VERSION"),
    "cnitool": ("cni-plugins", "CNI_PLUGINS_VERSION"),
    "flannel": ("cni-flannel", "FLANNEL_CNI_PLUGIN_VERSION"),
}
# The lab's own program around kube-proxy's IPVS proxier (ipvs_shadow.py): versioned as
# build.sh names it, Kubernetes' version plus a digest of its Go source.
IPVS_PROXIER_SOURCE = LAB_DIR / "components" / "kubernetes" / "ipvsproxier"
# kube-controller-manager runs only the EndpointSlice controllers (controlplane.py)
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager")
NODE = ("kube-proxy",)  # run in every lab node
PODS = ("coredns",)  # run in a lab pod (coredns.py)
LAB = (*CONTROL_PLANE, *NODE, *PODS)  # what `lab up` runs: it refuses when one is missing
# What a flannel node's kubelet runs for a pod (the conflist's plugins, the bridge and the IPAM
# it delegates to) and cnitool, where the container runtime would call libcni (cni.py)
CNI_PLUGINS = ("flannel", "bridge", "host-local", "portmap")
FLANNEL_NODE = ("flanneld", *CNI_PLUGINS, "cnitool")
CNI = {"flannel-vxlan": FLANNEL_NODE, "flannel-host-gw": FLANNEL_NODE}  # per node, by mode
# per node, by `lab up --network-policy` mode (kuberouter.py); "none" runs no enforcer
NETWORK_POLICY = {"kube-router": ("kube-router",)}


def for_lab(cni_mode: str | None, network_policy: str | None = None) -> tuple[str, ...]:
    """What `lab up` runs in this CNI mode (None: the default, flannel-vxlan) and network
    policy mode (None: "none")."""
    return (*LAB, *CNI.get(cni_mode or "flannel-vxlan", ()),
            *NETWORK_POLICY.get(network_policy or "none", ()))


@dataclass(frozen=True)
class Component:
    binary: str
    version: str
    path: Path

    @property
    def present(self) -> bool:
        return self.path.is_file() and os.access(self.path, os.X_OK)


def read_versions(path: Path = VERSIONS_ENV) -> dict[str, str]:
    """versions.env's KEY=value lines (shell syntax, but only the plain subset it uses)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LabError(
            f"{path}: not found; the lab's real components need the lab installed editable "
            f"from the repository (pip install -e ./lab)"
        ) from exc
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value, comments=True)
        out[key.strip()] = words[0] if words else ""
    return _derived(out)


def _derived(versions: dict[str, str]) -> dict[str, str]:
    """The versions build.sh computes rather than reads (IPVS_PROXIER_VERSION)."""
    if versions.get("KUBERNETES_VERSION") and "IPVS_PROXIER_VERSION" not in versions:
        sources = sorted(IPVS_PROXIER_SOURCE.glob("*.go"))
        if sources:
            digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
            versions["IPVS_PROXIER_VERSION"] = f"{versions['KUBERNETES_VERSION']}-src{digest[:12]}"
    return versions


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(CACHE_ENV) or DEFAULT_CACHE)


def component(binary: str, *, versions: Mapping[str, str] | None = None,
              root: Path | None = None) -> Component:
    """Where `binary` is (or would be) for the pinned version."""
    try:
        project, key = BINARIES[binary]
    except KeyError as exc:
        raise LabError(f"unknown component {binary!r}; one of {', '.join(BINARIES)}") from exc
    versions = read_versions() if versions is None else versions
    version = versions.get(key)
    if not version:
        raise LabError(f"{VERSIONS_ENV}: no {key}")
    root = cache_root() if root is None else root
    return Component(binary, version, root / f"{project}-{version}" / binary)


def path_of(binary: str) -> Path:
    return component(binary).path


def cni_path() -> str:
    """CNI_PATH for the node's plugins: the directories they are cached in."""
    return ":".join(dict.fromkeys(str(path_of(b).parent) for b in CNI_PLUGINS))


def build_command(binaries: Iterable[str]) -> str:
    return shlex.join(["bash", BUILD_SCRIPT, *binaries])


def missing(binaries: Iterable[str] = CONTROL_PLANE, *, root: Path | None = None) -> str | None:
    """None when every binary is built for its pinned version, else a message naming the
    missing ones and the exact command that builds them."""
    versions = read_versions()
    absent = [c for c in (component(b, versions=versions, root=root) for b in binaries)
              if not c.present]
    if not absent:
        return None
    listing = ", ".join(f"{c.binary} {c.version} ({c.path})" for c in absent)
    where = "" if root is None and CACHE_ENV not in os.environ else \
        f"{CACHE_ENV}={shlex.quote(str(root or cache_root()))} "
    return (f"lab components not built: {listing}; build them from the repository root with "
            f"`{where}{build_command(c.binary for c in absent)}` (as root)")
