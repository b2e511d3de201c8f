"""A real Kubernetes control plane for the lab: etcd, kube-apiserver and kube-controller-manager
in a network namespace of their own, `<prefix>-cp`, on the lab switch at 198.18.0.3/24 (no
default route, like every lab namespace). `Lab.up` starts it; apisync.py keeps its objects in
step with lab.json.

    cp = ControlPlane(workdir, netns)   # netns exists and is wired (add_cp_netns does both)
    cp.start()                          # PKI, tokens, etcd, kube-apiserver, /readyz, RBAC,
                                        # kube-controller-manager, its /healthz
    admin = cp.admin()                  # AdminClient: create objects, set pod/node status
    cp.kubeconfig("kubenetdiag")        # read-only token (collect/rbac.yaml), for the diagnoser
    cp.kubeconfig("nobody")             # authenticated, no rights: real 403s
    cp.stop()                           # idempotent; kills all three, nothing left anywhere

* etcd listens on 127.0.0.1 inside the namespace only (client 2379, peer 2380); its data dir is
  `<workdir>/controlplane/etcd`, wiped at every start, and it runs with --unsafe-no-fsync: lab
  data is throw-away, and fsyncs on a shared disk cost start-up time.
* kube-apiserver listens on 198.18.0.3:6443 only (TLS from pki.py), RBAC only (no Node
  authorizer: there is no kubelet), static tokens (--token-auth-file) for three users:
  `kubenetdiag-lab-admin` (group system:masters), `kubenetdiag` (bound to the ClusterRole in
  kubenetdiag/collect/rbac.yaml, applied at start-up with the admin token), `nobody` (no
  binding at all), `kubenetdiag-no-pods` (that ClusterRole without pods) and
  `system:kube-proxy` (the nodes' real kube-proxy, through Kubernetes' own bootstrap
  ClusterRoleBinding system:node-proxier; not audited). Anonymous
  requests stay enabled as on a real cluster (/version, /readyz).
* The ServiceAccount admission plugin is disabled: it rejects every pod whose namespace has no
  `default` ServiceAccount, and the lab's kube-controller-manager does not run the
  serviceaccount controller that creates those. The
  alternative, creating a ServiceAccount in every namespace the lab uses, would be one more
  step per namespace for a field (the pod's service account) the diagnoser never reads.
  Everything else in the default admission chain stays on.
* kube-controller-manager runs only the EndpointSlice controllers (KCM_CONTROLLERS): the
  EndpointSlices of every Service with a selector are its own, following the pods' Ready
  condition as on a real cluster. It elects itself leader through the Lease
  kube-system/kube-controller-manager, as a kubeadm control plane's does (one instance, so it
  wins at once; the diagnoser reads the lease to tell a stopped controller from a slow one),
  and serves /healthz on 127.0.0.1:10257 inside the namespace only.
  `restart_controller_manager` replaces it (the endpoints_controller_lagging fault's heal).
* Without scheduler, kubelet and the other controllers, the lab writes what they would:
  spec.nodeName and spec.podCIDR at creation, pod and node status through the status
  subresource (apisync.py).
* Processes are started with `ip netns exec` (the pid is the binary's: ip execs it), niced,
  logs in `<workdir>/logs/<binary>.log`, pids in `<workdir>/controlplane/pids.json`
  so `stop_recorded(workdir)` can clean up after a crashed run.
* Calls from this (root-namespace) process to the API run in a thread that entered the client
  or control-plane namespace with setns(2) (`in_netns`): the root namespace cannot reach
  198.18.0.3 and must not.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubenetdiag_lab import components, pki
from kubenetdiag_lab.errors import LabError, log_tail
from kubenetdiag_lab.netns import (
    NETNS_DIR,
    add_netns,
    cmdline,
    delete_netns,
    ip_batch,
    pids_in_netns,
    terminate,
)
from kubenetdiag_lab.pki import write_private
from kubenetdiag_lab.topology import CLUSTER_DOMAIN, SERVICE_NETWORK, UNDERLAY

CP_ADDRESS = "198.18.0.3"
SECURE_PORT = 6443
ETCD_CLIENT = "http://127.0.0.1:2379"
ETCD_PEER = "http://127.0.0.1:2380"
SWITCH_PORT = "swcp"  # the control plane's port on the lab switch's br0
ADMIN_USER = "kubenetdiag-lab-admin"
READER_USER = "kubenetdiag"
NOBODY_USER = "nobody"
# The reader's rights minus pods: a real 403 on the pod lists only (tests of what a partly
# forbidden collection still finds).
NO_PODS_USER = "kubenetdiag-no-pods"
# The nodes' kube-proxy: Kubernetes' bootstrap ClusterRoleBinding system:node-proxier grants
# this user what kube-proxy reads and writes (services, endpointslices, nodes; events).
PROXY_USER = "system:kube-proxy"
# The nodes' flanneld and the CoreDNS pods, as their ServiceAccounts would authenticate; their
# rights are the ClusterRoles their upstream manifests ship (component_rbac_manifest()).
FLANNEL_USER = "system:serviceaccount:kube-flannel:flannel"
COREDNS_USER = "system:serviceaccount:kube-system:coredns"
# The nodes' kube-router (`lab up --network-policy kube-router`), as its ServiceAccount would
# authenticate; its rights (kube_router_rbac_manifest) are applied only in that mode.
KUBE_ROUTER_USER = "system:serviceaccount:kube-system:kube-router"
USERS = (ADMIN_USER, READER_USER, NOBODY_USER, NO_PODS_USER, PROXY_USER, FLANNEL_USER,
         COREDNS_USER, KUBE_ROUTER_USER)
# Whose every request the audit log keeps: the diagnoser's users, not the lab's own components.
AUDITED_USERS = (READER_USER, NOBODY_USER, NO_PODS_USER)
NICE = 10
# The controllers the lab needs: EndpointSlices from Services and pod readiness, and the
# mirroring of selector-less Endpoints into slices, both on by default on a real cluster.
KCM_CONTROLLERS = ("endpointslice-controller", "endpointslice-mirroring-controller")
KCM_HEALTHZ_PORT = 10257
KCM_LEASE = "kube-controller-manager"  # its leader election's default name, in kube-system
START_TIMEOUT = 180.0
SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"

T = TypeVar("T")


def cp_netns(prefix: str) -> str:
    return f"{prefix}-cp"


def server_url(address: str = CP_ADDRESS) -> str:
    return f"https://{address}:{SECURE_PORT}"


# ---------------------------------------------------------------- network namespaces

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def in_netns(netns: str, fn: Callable[..., T], *args: Any, timeout: float | None = None,
             **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a new thread that first entered network namespace `netns`.

    setns(2) moves only the calling thread (os.setns needs Python 3.12), so the caller's
    thread stays where it is; threads fn starts inherit the namespace, and sockets fn opens
    stay in it. Exceptions propagate; `timeout` (seconds) raises TimeoutError if fn is
    still running (the thread is a daemon and is left to finish).
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into network namespace {netns}: "
                                       f"{os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in network namespace {netns} still running after {timeout}s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def add_cp_netns(prefix: str, switch_netns: str, address: str = CP_ADDRESS,
                 prefixlen: int = UNDERLAY.prefixlen) -> str:
    """Create `<prefix>-cp` and plug it into the switch's br0 at address/prefixlen (no default
    route).

    The veth is created in the switch with its peer born in the new namespace, as the lab
    does for every namespace: no interface ever exists in the root namespace.
    """
    name = cp_netns(prefix)
    add_netns([name])
    try:
        ip_batch(switch_netns, [f"link add {SWITCH_PORT} type veth peer name eth0 netns {name}",
                                f"link set {SWITCH_PORT} master br0 up"])
        ip_batch(name, ["link set lo up", f"addr add {address}/{prefixlen} dev eth0",
                        "link set eth0 up"])
    except BaseException:
        delete_cp_netns(prefix)
        raise
    return name


def delete_cp_netns(prefix: str) -> list[str]:
    """Kill whatever still runs in `<prefix>-cp` and delete it (its veth goes with it); return
    what could not be deleted. Safe to repeat."""
    name = cp_netns(prefix)
    terminate(pid for pids in pids_in_netns([name]).values() for pid in pids)
    return delete_netns([name])


# ---------------------------------------------------------------- files


@dataclass(frozen=True)
class ControlPlaneFiles:
    workdir: Path

    @property
    def dir(self) -> Path:
        return self.workdir / "controlplane"

    @property
    def pki(self) -> pki.PkiFiles:
        return pki.PkiFiles(self.dir / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.dir / "etcd"

    @property
    def tokens(self) -> Path:
        return self.dir / "tokens.csv"

    @property
    def pids(self) -> Path:
        return self.dir / "pids.json"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def log(self, binary: str) -> Path:
        return self.logs / f"{binary}.log"

    def kubeconfig(self, user: str) -> Path:
        return self.dir / f"kubeconfig-{user.replace(':', '-')}"

    @property
    def audit_policy(self) -> Path:
        return self.dir / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        return self.logs / "kube-apiserver-audit.log"


def kubeconfig_text(server: str, ca_pem: bytes, user: str, token: str) -> str:
    import base64

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubenetdiag-lab", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"{user}@kubenetdiag-lab",
                      "context": {"cluster": "kubenetdiag-lab", "user": user}}],
        "current-context": f"{user}@kubenetdiag-lab",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, user: str, token: str) -> Path:
    """A kubeconfig (0600) that authenticates as `user` with a bearer token."""
    write_private(path, kubeconfig_text(server, ca_pem, user, token).encode())
    return path


def rbac_manifest() -> list[dict]:
    """kubenetdiag/collect/rbac.yaml: the product's read-only ClusterRole and its binding."""
    text = resources.files("kubenetdiag.collect").joinpath("rbac.yaml").read_text("utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def no_pods_manifest() -> list[dict]:
    """rbac_manifest()'s ClusterRole without pods, bound to NO_PODS_USER."""
    role, binding = (dict(doc) for doc in rbac_manifest())
    name = "kubenetdiag-reader-no-pods"
    rules = []
    for rule in role["rules"]:
        resources = [r for r in rule.get("resources", []) if r != "pods"]
        if "resources" in rule and not resources:
            continue
        rules.append({**rule, **({"resources": resources} if "resources" in rule else {})})
    role = {**role, "metadata": {**role["metadata"], "name": name}, "rules": rules}
    binding = {**binding, "metadata": {**binding["metadata"], "name": name},
               "roleRef": {**binding["roleRef"], "name": name},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": NO_PODS_USER}]}
    return [role, binding]



def _role_for(user: str, name: str, rules: list[dict]) -> list[dict]:
    rbac = "rbac.authorization.k8s.io/v1"
    return [{"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name},
             "rules": rules},
            {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": name},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": user}]}]


def component_rbac_manifest() -> list[dict]:
    """The rights flanneld and CoreDNS get from their upstream manifests (kube-flannel.yml's
    ClusterRole flannel, CoreDNS's system:coredns), bound to the lab's users for them: a
    component that needs more fails here as it would on a real cluster."""
    flannel = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    coredns = [
        {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["list", "watch"]},
    ]
    return [*_role_for(FLANNEL_USER, "flannel", flannel),
            *_role_for(COREDNS_USER, "system:coredns", coredns)]


def kube_router_rbac_manifest() -> list[dict]:
    """The rights of upstream's ClusterRole kube-router (daemonset/generic-kuberouter.yaml,
    v2.1.0), bound to the lab's user for it. Its firewall-only run starts informers on
    services, endpoints, endpointslices, pods, nodes, namespaces and networkpolicies; the lease
    and services/status rights are its load-balancer allocator's, kept as upstream ships them."""
    rules = [
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
         "verbs": ["list", "get", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
         "verbs": ["list", "get", "watch"]},
        {"apiGroups": ["extensions"], "resources": ["networkpolicies"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "create", "update"]},
        {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
    ]
    return _role_for(KUBE_ROUTER_USER, "kube-router", rules)


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- the admin client


class ApiError(LabError):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        try:
            message = json.loads(body).get("message") or ""
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


# kind -> (plural, namespaced): what the lab creates
KINDS: Mapping[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "Node": ("nodes", False),
    "Pod": ("pods", True),
    "Service": ("services", True),
    "ConfigMap": ("configmaps", True),
    "ServiceAccount": ("serviceaccounts", True),
    "DaemonSet": ("daemonsets", True),
    "EndpointSlice": ("endpointslices", True),
    "NetworkPolicy": ("networkpolicies", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
    "IPPool": ("ippools", False),
}


def collection_path(obj: Mapping[str, Any], namespace: str | None = None) -> str:
    """/api/v1/... or /apis/<group>/<version>/... collection of an object, from its
    apiVersion and kind (KINDS lists the kinds known here)."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    try:
        plural, namespaced = KINDS[kind]
    except KeyError as exc:
        raise LabError(f"the lab's admin client does not know kind {kind!r}") from exc
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced:
        ns = namespace or obj.get("metadata", {}).get("namespace") or "default"
        return f"{base}/namespaces/{ns}/{plural}"
    return f"{base}/{plural}"


class AdminClient:
    """Plain HTTPS with the admin token, every request from inside `netns` (the control plane's
    own namespace, or the client's). JSON in, JSON out; errors raise ApiError.

    One thread per call (see in_netns) and one connection per call: simple, and a few
    milliseconds each, which is nothing next to the lab's other steps.
    """

    def __init__(self, netns: str, server: str, ca_file: Path, token: str,
                 timeout: float = 15.0) -> None:
        host, _, port = server.removeprefix("https://").rpartition(":")
        self.netns, self.host, self.port = netns, host, int(port)
        self.ca_file, self.token, self.timeout = ca_file, token, timeout

    def raw(self, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> tuple[int, bytes]:
        def call() -> tuple[int, bytes]:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            conn = http.client.HTTPSConnection(self.host, self.port, context=ctx,
                                               timeout=self.timeout)
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        return in_netns(self.netns, call)

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", ok: Iterable[int] = (200, 201)
                ) -> Any:
        status, data = self.raw(method, path, body, content_type)
        if status not in set(ok):
            raise ApiError(method, path, status, data)
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path, ok=(200, 202, 404))

    def create(self, obj: Mapping[str, Any], *, exist_ok: bool = False) -> dict:
        """POST an object to its collection; with exist_ok a 409 returns the existing one."""
        path = collection_path(obj)
        status, data = self.raw("POST", path, dict(obj))
        if status == 409 and exist_ok:
            return self.get(f"{path}/{obj['metadata']['name']}")
        if status not in (200, 201):
            raise ApiError("POST", path, status, data)
        return json.loads(data)

    def apply(self, obj: Mapping[str, Any]) -> dict:
        """Create, or replace an existing object of that name (a plain PUT, not server-side
        apply: the lab owns every object it writes)."""
        path = collection_path(obj)
        status, data = self.raw("POST", path, dict(obj))
        if status in (200, 201):
            return json.loads(data)
        if status != 409:
            raise ApiError("POST", path, status, data)
        item = f"{path}/{obj['metadata']['name']}"
        current = self.get(item)
        body = {**obj, "metadata": {**obj["metadata"],
                                    "resourceVersion": current["metadata"]["resourceVersion"]}}
        return self.request("PUT", item, body)

    def replace(self, obj: Mapping[str, Any]) -> dict:
        """PUT over the existing object of that name (its current resourceVersion)."""
        item = f"{collection_path(obj)}/{obj['metadata']['name']}"
        current = self.get(item)
        body = {**obj, "metadata": {**obj["metadata"],
                                    "resourceVersion": current["metadata"]["resourceVersion"]}}
        return self.request("PUT", item, body)

    def patch(self, obj_path: str, body: Mapping[str, Any]) -> dict:
        """Strategic-merge-patch an object: lists with a merge key (conditions by type) and
        maps (annotations) keep the entries other writers put there, as the lab's real
        components do (flanneld's annotations and NetworkUnavailable condition on a Node)."""
        return self.request("PATCH", obj_path, dict(body),
                            content_type="application/strategic-merge-patch+json")

    def patch_status(self, obj_path: str, status: Mapping[str, Any]) -> dict:
        """Patch `status` through the status subresource, as kubelet (pods, nodes) or a
        controller (DaemonSets) would; obj_path is the object's own path."""
        return self.patch(f"{obj_path}/status", {"status": dict(status)})

    def ensure_namespace(self, name: str) -> dict:
        return self.create({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name}}, exist_ok=True)

    def readyz(self) -> tuple[int, str]:
        status, data = self.raw("GET", "/readyz")
        return status, data.decode(errors="replace")


# ---------------------------------------------------------------- the processes


@dataclass
class Proc:
    binary: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


class ControlPlane:
    """etcd + kube-apiserver in network namespace `netns` (which must exist and be wired)."""

    def __init__(self, workdir: Path, netns: str, address: str = CP_ADDRESS, *,
                 nice: int = NICE, components_root: Path | None = None,
                 apiserver_args: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir).resolve()
        self.netns = netns
        self.address = address
        self.nice = nice
        self.files = ControlPlaneFiles(self.workdir)
        self.components_root = components_root
        self.apiserver_args = tuple(apiserver_args)  # appended to kube-apiserver's flags
        self.tokens: dict[str, str] = {}
        self.procs: dict[str, Proc] = {}
        self.timings: dict[str, float] = {}

    @property
    def server(self) -> str:
        return server_url(self.address)

    def kubeconfig(self, user: str) -> Path:
        """The kubeconfig written for `user` (one of USERS); "kubenetdiag" is the diagnoser's."""
        if user not in USERS:
            raise LabError(f"no kubeconfig for {user!r}; users are {', '.join(USERS)}")
        return self.files.kubeconfig(user)

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def rss(self) -> dict[str, int | None]:
        """Resident memory of each process, in bytes."""
        return {name: rss_bytes(pid) for name, pid in self.pids.items()}

    # ---- start ----------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """PKI, tokens, etcd, kube-apiserver; wait for /readyz; apply the RBAC; kubeconfigs.
        On any failure everything started is stopped and a LabError says why (with the log
        tail of the process that failed)."""
        if self.procs:
            raise LabError("control plane already started")
        reason = components.missing(components.CONTROL_PLANE, root=self.components_root)
        if reason:
            raise LabError(reason)
        if not (NETNS_DIR / self.netns).exists():
            raise LabError(f"network namespace {self.netns} does not exist")
        started = time.monotonic()
        try:
            self._prepare_files()
            deadline = time.monotonic() + timeout
            self._start("etcd", self._etcd_argv())
            # kube-apiserver would retry etcd by itself, but its log then starts with pages of
            # gRPC dial errors and an etcd that fails is reported as an apiserver timeout.
            self._wait_etcd(deadline)
            self.timings["etcd_ready_s"] = time.monotonic() - started
            self._start("kube-apiserver", self._apiserver_argv())
            self._wait_ready(deadline)
            self.timings["ready_s"] = time.monotonic() - started
            admin = self.admin()
            for doc in rbac_manifest() + no_pods_manifest() + component_rbac_manifest():
                admin.apply(doc)
            self._write_kubeconfigs()
            kcm_started = time.monotonic()
            self._start("kube-controller-manager", self._controller_manager_argv())
            self._wait_controller_manager(deadline)
            self.timings["kcm_ready_s"] = time.monotonic() - kcm_started  # its own start-up
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - started

    def _prepare_files(self) -> None:
        files = self.files
        files.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(files.dir, 0o700)
        files.logs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(files.etcd_data, ignore_errors=True)  # every start is a fresh cluster
        files.pids.unlink(missing_ok=True)  # _record_pids merges: nothing of an earlier run
        pki.write_control_plane_pki(files.pki.dir, self.address)
        self.tokens = {user: secrets.token_urlsafe(24) for user in USERS}
        groups = {ADMIN_USER: "system:masters"}
        # token,user,uid,"group1,group2"
        lines = [f'{token},{user},{user},"{groups.get(user, "")}"'
                 for user, token in self.tokens.items()]
        write_private(files.tokens, ("\n".join(lines) + "\n").encode())
        # Every request of the non-admin users (the diagnoser's), one JSON line each: what
        # proves the collector only reads. The lab's own admin writes are not logged.
        policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                  "omitStages": ["RequestReceived"],
                  "rules": [{"level": "Metadata",
                             "users": list(AUDITED_USERS)},
                            {"level": "None"}]}
        write_private(files.audit_policy, yaml.safe_dump(policy).encode())
        files.audit_log.unlink(missing_ok=True)

    def _binary(self, name: str) -> str:
        versions = components.read_versions()
        return str(components.component(name, versions=versions, root=self.components_root).path)

    def _etcd_argv(self) -> list[str]:
        return [
            self._binary("etcd"),
            "--name=cp",
            f"--data-dir={self.files.etcd_data}",
            f"--listen-client-urls={ETCD_CLIENT}",
            f"--advertise-client-urls={ETCD_CLIENT}",
            f"--listen-peer-urls={ETCD_PEER}",
            f"--initial-advertise-peer-urls={ETCD_PEER}",
            f"--initial-cluster=cp={ETCD_PEER}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        p = self.files.pki
        return [
            self._binary("kube-apiserver"),
            f"--etcd-servers={ETCD_CLIENT}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={SECURE_PORT}",
            f"--tls-cert-file={p.apiserver_cert}",
            f"--tls-private-key-file={p.apiserver_key}",
            f"--cert-dir={p.dir}",  # never the default /var/run/kubernetes
            "--authorization-mode=RBAC",
            f"--token-auth-file={self.files.tokens}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_NETWORK}",
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-policy-file={self.files.audit_policy}",
            f"--audit-log-path={self.files.audit_log}",
            "--profiling=false",
            "--v=1",
            *self.apiserver_args,
        ]

    def _controller_manager_argv(self) -> list[str]:
        return [
            self._binary("kube-controller-manager"),
            # The admin identity (system:masters), not system:kube-controller-manager: that
            # bootstrap role relies on --use-service-account-credentials for the controllers'
            # own rights, which needs the serviceaccount-token controller and the ServiceAccount
            # admission the lab leaves out; the lab's two controllers on a throw-away API gain
            # nothing from the narrower rights, and admin requests are not audited.
            f"--kubeconfig={self.files.kubeconfig(ADMIN_USER)}",
            f"--controllers={','.join(KCM_CONTROLLERS)}",
            "--bind-address=127.0.0.1",
            f"--secure-port={KCM_HEALTHZ_PORT}",
            f"--cert-dir={self.files.dir / 'kcm-serving'}",  # its self-signed serving cert
            "--profiling=false",
            "--v=1",
        ]

    def _start(self, name: str, argv: Sequence[str]) -> None:
        log = self.files.log(name)
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "nice", "-n", str(self.nice), *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        self.procs[name] = Proc(name, popen)
        self._record_pids()

    def _record_pids(self) -> None:
        # merged with the file: a process restarted by another process than the one that
        # started the control plane (`lab heal`) must not drop the others' pids
        data = self._recorded()
        data.update({name: {"pid": proc.pid, "binary": self._binary(name)}
                     for name, proc in self.procs.items()})
        write_private(self.files.pids, json.dumps(data).encode())

    def _recorded(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.files.pids.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def recorded_pid(self, name: str) -> int | None:
        """The pid pids.json has for `name` (kube-controller-manager...), when that process
        still runs its binary."""
        entry = self._recorded().get(name)
        if not isinstance(entry, dict):
            return None
        pid, binary = int(entry.get("pid") or 0), str(entry.get("binary") or "")
        return pid if pid > 0 and binary and binary in cmdline(pid) else None

    def controller_manager_lease(self) -> dict[str, Any]:
        """kube-controller-manager's leader Lease as the API holds it ({} before the first)."""
        if not self.tokens:
            self.attach()  # started by another process (`lab up`)
        try:
            return self.admin().get(f"/apis/coordination.k8s.io/v1/namespaces/kube-system/"
                                    f"leases/{KCM_LEASE}")
        except ApiError as exc:
            if exc.status == 404:
                return {}
            raise

    def restart_controller_manager(self, extra_args: Sequence[str] = (),
                                   timeout: float = 60.0) -> None:
        """Stop kube-controller-manager (running, hung or SIGSTOPped) and start a new one with
        `extra_args` after its usual flags; wait until the new one holds the lease: only then
        do its controllers run. A candidate waits out the old holder's lease (15 s) first."""
        old = (self.controller_manager_lease().get("spec") or {}).get("holderIdentity")
        pid = self.recorded_pid("kube-controller-manager")
        if pid is not None:
            _terminate_stopped_ok(pid, grace=5.0)
        proc = self.procs.pop("kube-controller-manager", None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)  # reaped: it was this process's child
        deadline = time.monotonic() + timeout
        self._start("kube-controller-manager", [*self._controller_manager_argv(), *extra_args])
        self._wait_controller_manager(deadline)
        log = self.files.log("kube-controller-manager")
        while True:
            holder = (self.controller_manager_lease().get("spec") or {}).get("holderIdentity")
            if holder and holder != old:
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise LabError(f"the new kube-controller-manager did not take its lease in "
                               f"{timeout:.0f}s (held by {holder!r}); last lines of {log}:\n"
                               f"{log_tail(log)}")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            code = proc.popen.poll()
            if code is not None:
                raise LabError(f"{name} exited with status {code} while the control plane "
                               f"was starting; last lines of {self.files.log(name)}:\n"
                               f"{log_tail(self.files.log(name))}")

    def _wait_etcd(self, deadline: float) -> None:
        def health() -> str:
            conn = http.client.HTTPConnection("127.0.0.1", 2379, timeout=2)
            try:
                conn.request("GET", "/health")
                return conn.getresponse().read().decode(errors="replace")
            finally:
                conn.close()

        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                last = in_netns(self.netns, health)
                if '"health":"true"' in last.replace(" ", ""):
                    return
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise LabError(f"etcd not healthy in time ({last}); last lines of "
                               f"{self.files.log('etcd')}:\n{log_tail(self.files.log('etcd'))}")
            time.sleep(0.1)

    def _wait_ready(self, deadline: float) -> None:
        admin = self.admin(timeout=5.0)
        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                status, text = admin.readyz()
                if status == 200:
                    return
                last = f"/readyz answered HTTP {status}: {text.strip()[-500:]}"
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                last = f"/readyz: {type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise LabError(
                    f"kube-apiserver not ready in time ({last}); last lines of "
                    f"{self.files.log('kube-apiserver')}:\n"
                    f"{log_tail(self.files.log('kube-apiserver'))}")
            time.sleep(0.25)

    def _wait_controller_manager(self, deadline: float) -> None:
        def healthz() -> int:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # its own self-signed cert; only /healthz is read
            conn = http.client.HTTPSConnection("127.0.0.1", KCM_HEALTHZ_PORT, context=ctx,
                                               timeout=2)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status
            finally:
                conn.close()

        log = self.files.log("kube-controller-manager")
        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                status = in_netns(self.netns, healthz)
                if status == 200:
                    return
                last = f"/healthz answered HTTP {status}"
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                last = f"/healthz: {type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise LabError(f"kube-controller-manager not healthy in time ({last}); last "
                               f"lines of {log}:\n{log_tail(log)}")
            time.sleep(0.1)

    def _write_kubeconfigs(self) -> None:
        ca = self.files.pki.ca_cert.read_bytes()
        for user, token in self.tokens.items():
            write_kubeconfig(self.files.kubeconfig(user), self.server, ca, user, token)

    # ---- use ------------------------------------------------------------------------------

    def attach(self) -> ControlPlane:
        """Take the tokens of a control plane another process started (the CLI's `inject`
        after `up`), so admin() works here; the processes stay that process's."""
        try:
            lines = self.files.tokens.read_text().splitlines()
        except OSError as exc:
            raise LabError(f"{self.files.tokens}: no control plane tokens ({exc})") from exc
        for line in lines:
            token, user, *_rest = line.split(",")
            self.tokens[user] = token
        return self

    def admin(self, netns: str | None = None, timeout: float = 15.0) -> AdminClient:
        """A client with the admin token, calling from `netns` (default: the control plane's
        own namespace)."""
        if not self.tokens:
            raise LabError("control plane not started")
        return AdminClient(netns or self.netns, self.server, self.files.pki.ca_cert,
                           self.tokens[ADMIN_USER], timeout=timeout)

    # ---- stop -----------------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """Stop kube-controller-manager, kube-apiserver, then etcd (SIGTERM, SIGCONT in case
        one was stopped, SIGKILL after `grace`); safe to repeat."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.popen.poll() is None:
                _terminate_stopped_ok(proc.pid, grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=grace)
            del self.procs[name]
        self.files.pids.unlink(missing_ok=True)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate_stopped_ok(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a SIGSTOPped process only acts on SIGTERM once resumed
    terminate([pid], grace=grace)


def stop_recorded(workdir: Path, grace: float = 5.0) -> list[int]:
    """Stop the control plane processes a (possibly crashed) run recorded in
    `<workdir>/controlplane/pids.json`, each only if its command line still names its binary.
    Returns the pids stopped."""
    files = ControlPlaneFiles(Path(workdir).resolve())
    try:
        data = json.loads(files.pids.read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for entry in data.values():
        pid, binary = int(entry["pid"]), str(entry["binary"])
        if binary and binary in cmdline(pid):
            _terminate_stopped_ok(pid, grace)
            stopped.append(pid)
    files.pids.unlink(missing_ok=True)
    return stopped
