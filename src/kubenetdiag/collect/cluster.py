"""Collect the cluster's own view from the Kubernetes API, raw, into the bundle's cluster.json.

Like the node collector, nothing is interpreted here: each API call becomes one record with its
outcome (ok, forbidden, unauthorized, not_found, timeout, unreachable, error), HTTP status,
reason, duration and the raw items. facts/cluster.py reads them later, offline.

Rules this module keeps, because an outage is the worst time for a diagnoser to misbehave:

* only get and list, never a write verb;
* every request has a (connect, read) timeout and urllib3 retries are off, so a slow API costs
  one timeout per call, not four; once the server is unreachable the remaining calls are
  skipped rather than each waiting out its own connect timeout;
* lists are paginated; a continue token that expired (410 Gone) restarts that list;
* responses are parsed with ``json`` (``_preload_content=False``): the client's model
  deserialisation is slow on big lists and fails on fields it does not know;
* one failing call never stops the others, and no exception leaves ``collect_cluster``;
* ``kubernetes`` is imported only when the API is used (it costs about half a second).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from kubenetdiag.errors import InputError
from kubenetdiag.vocabulary import CNI_MARKERS

CLUSTER_SCHEMA = "kubenetdiag/cluster/v1"
PAGE_SIZE = 500
MAX_LIST_RESTARTS = 3
FLANNEL_CM = "kube-flannel-cfg"
CONTROLLER_LEASE = "kube-controller-manager"
# Where CNI agents live when the DaemonSet list cannot tell us (it was forbidden).

STATUS_BY_HTTP = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


@dataclass(frozen=True)
class ApiTarget:
    """Which API to ask. Credentials stay in the kubeconfig; nothing here is secret."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False


def default_kubeconfig(home: Path | None = None) -> Path | None:
    """~/.kube/config, the file kubectl reads without $KUBECONFIG, when there is one."""
    path = (home or Path.home()) / ".kube" / "config"
    return path if path.is_file() else None


def resolve_target(
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> tuple[ApiTarget | None, str]:
    """(target, why) from the CLI flags and the environment; target None means do not ask.

    Asking the API is opt-in, like kubectl's own lookup once opted in: ``--in-cluster``;
    ``--kubeconfig PATH``; ``--context`` alone reads $KUBECONFIG, else ~/.kube/config if it
    exists; no flag but $KUBECONFIG set counts as opting in. A bare ~/.kube/config is not
    used without a flag: it may well point at another cluster than the inventory's.
    """
    environ = os.environ if environ is None else environ
    if in_cluster:
        if kubeconfig:
            raise InputError(
                "--in-cluster and --kubeconfig exclude each other",
                hint="use one way to reach the API",
            )
        return ApiTarget(in_cluster=True), "--in-cluster"
    if kubeconfig:
        return ApiTarget(kubeconfig, context), "--kubeconfig"
    env = environ.get("KUBECONFIG", "").strip()
    if env:
        return ApiTarget(env, context), "$KUBECONFIG"
    if context:
        default = default_kubeconfig(home)
        if default is not None:
            return ApiTarget(str(default), context), "~/.kube/config"
        raise InputError(
            f"--context {context} given, but there is no $KUBECONFIG and no "
            f"{(home or Path.home()) / '.kube' / 'config'}",
            hint="pass --kubeconfig PATH",
        )
    return None, (
        "the cluster API was not queried: no --kubeconfig, --context, --in-cluster or $KUBECONFIG"
    )


def load_client(target: ApiTarget) -> tuple[Any, dict]:
    """An ApiClient of its own (no global configuration touched) and the secret-free source.

    Raises InputError for a kubeconfig that cannot be used: that is the user's input, so it
    stops the run before any node is touched, like a bad inventory does.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    source: dict[str, Any] = {
        "kubeconfig": None,
        "context": None,
        "server": None,
        "in_cluster": target.in_cluster,
    }
    try:
        if target.in_cluster:
            config.load_incluster_config(client_configuration=cfg)
        else:
            paths = (
                [p for p in target.kubeconfig.split(os.pathsep) if p] if target.kubeconfig else []
            )
            if not any(Path(p).expanduser().is_file() for p in paths):
                raise InputError(
                    f"kubeconfig {target.kubeconfig} does not exist",
                    hint="pass the path of a kubeconfig file",
                )
            config.load_kube_config(
                config_file=target.kubeconfig,
                context=target.context,
                client_configuration=cfg,
                persist_config=False,
            )
            _, active = config.list_kube_config_contexts(config_file=target.kubeconfig)
            source["kubeconfig"] = target.kubeconfig
            source["context"] = target.context or (active or {}).get("name")
    except ConfigException as exc:
        raise InputError(
            f"cannot use the Kubernetes client configuration: {exc}", file=target.kubeconfig
        ) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # a kubeconfig that is YAML garbage surfaces as any of these from the loader
        raise InputError(f"cannot read kubeconfig: {exc!r}", file=target.kubeconfig) from None
    # urllib3 would retry a timed-out GET three times: one outage-slow call would cost four.
    cfg.retries = False
    source["server"] = cfg.host
    return client.ApiClient(cfg), source


def drop_credentials() -> None:
    """Delete the files the Kubernetes client wrote from the kubeconfig's inline data (CA,
    client certificate and key, under the temporary directory). The client removes them at
    exit, but a run that leaves with os._exit (a Ctrl-C) would leave a private key behind."""
    from kubernetes.config import kube_config

    cleanup = getattr(kube_config, "_cleanup_temp_files", None)
    if cleanup is not None:
        cleanup()


# ---------------------------------------------------------------- one call


class _Unreachable(Exception):
    pass


def _classify(exc: BaseException) -> tuple[str, int | None, str]:
    """(status, http_status, reason) of a failed call."""
    import urllib3.exceptions as ue
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        code = exc.status if isinstance(exc.status, int) else None
        message = _status_message(exc.body) or str(exc.reason or "")
        return STATUS_BY_HTTP.get(code or 0, "error"), code, f"HTTP {code}: {message}"[:500]
    if isinstance(exc, ue.ConnectTimeoutError | ue.NewConnectionError | ConnectionError):
        return "unreachable", None, _short(exc)
    if isinstance(exc, ue.ReadTimeoutError | TimeoutError | ue.TimeoutError):
        # urllib3 names the timeout that fired: the TLS handshake runs under the connect
        # timeout, the answer under the read timeout.
        return "timeout", None, f"no answer in time: {_short(exc)}"
    if isinstance(exc, ue.MaxRetryError | ue.ProtocolError | OSError):
        return "unreachable", None, _short(exc)
    if isinstance(exc, ValueError):
        return "error", None, f"answer is not valid JSON: {exc}"[:500]
    return "error", None, _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    reason = getattr(exc, "reason", None)  # urllib3 wraps the useful part
    if reason is not None and str(reason):
        text = str(reason)
    return f"{type(exc).__name__}: {text}"[:500]


def _status_message(body: Any) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300]
    return str(data.get("message") or "") if isinstance(data, dict) else ""


def _slim(obj: Any) -> Any:
    """Drop what only bloats the bundle: server-side apply bookkeeping and the last-applied copy."""
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        meta = dict(obj["metadata"])
        meta.pop("managedFields", None)
        ann = meta.get("annotations")
        if isinstance(ann, dict) and "kubectl.kubernetes.io/last-applied-configuration" in ann:
            meta["annotations"] = {
                k: v
                for k, v in ann.items()
                if k != "kubectl.kubernetes.io/last-applied-configuration"
            }
        return {**obj, "metadata": meta}
    return obj


# What the facts read of a pod. Every namespace's pods are listed, thousands in a large cluster,
# and a pod's full spec (volumes, env, probes, images) is most of its size: the bundle keeps
# who the pod is, where it runs, its ports and its health.
POD_META = ("name", "namespace", "uid", "labels", "ownerReferences", "deletionTimestamp")
POD_SPEC = ("nodeName", "hostNetwork")
POD_CONTAINER = ("name", "ports")
POD_STATUS = ("phase", "podIP", "podIPs", "hostIP", "conditions", "containerStatuses", "reason")


def _pick(obj: Any, keys: tuple[str, ...]) -> dict:
    return {k: obj[k] for k in keys if k in obj} if isinstance(obj, dict) else {}


def _slim_pod(pod: Any) -> Any:
    if not isinstance(pod, dict):
        return pod
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    containers = spec.get("containers") if isinstance(spec.get("containers"), list) else []
    return {
        "metadata": _pick(pod.get("metadata"), POD_META),
        "spec": {**_pick(spec, POD_SPEC), "containers": [_pick(c, POD_CONTAINER)
                                                        for c in containers]},
        "status": _pick(pod.get("status"), POD_STATUS),
    }


def _server_date(resp: Any) -> str | None:
    """The answer's Date header: the API server's clock, which the ages a fact computes from
    the server's timestamps (a lease's renewTime, a condition's lastTransitionTime) must be
    measured against; this machine's clock may be minutes off."""
    headers = getattr(resp, "headers", None)
    value = headers.get("Date") if headers is not None else None
    if not isinstance(value, str):
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


class _Session:
    def __init__(
        self,
        api: Any,
        connect_timeout: float,
        read_timeout: float,
        page_size: int,
        max_restarts: int,
    ) -> None:
        self.api = api
        self.timeout = (connect_timeout, read_timeout)
        self.page_size = page_size
        self.max_restarts = max_restarts
        self.calls: list[dict] = []
        # Why the rest is not tried: the server is unreachable, or it stopped answering.
        self.given_up: tuple[str, str] | None = None
        self.health: Callable[[], Any] | None = None  # a cheap call: is the server answering?

    def _body(self, resp: Any) -> Any:
        try:
            data = resp.data  # reads the whole body; the read timeout applies per socket read
        finally:
            resp.release_conn()
        return json.loads(data)

    def run(self, name: str, path: str, thunk: Callable[[], tuple[Any, dict]],
            slim: Callable[[Any], Any] = _slim) -> dict:
        started = time.monotonic()
        rec: dict[str, Any] = {
            "name": name,
            "path": path,
            "status": "ok",
            "http_status": 200,
            "reason": None,
            "duration_s": 0.0,
            "pages": 0,
            "restarts": 0,
            "items": None,
            "object": None,
        }
        if self.given_up:
            status, why = self.given_up
            rec.update(status=status, http_status=None, reason=f"not tried: {why}")
            self.calls.append(rec)
            return rec
        server_date = None
        try:
            result, extra = thunk()
            server_date = extra.pop("server_date", None)
            rec.update(extra)
            if isinstance(result, list):
                rec["items"] = [slim(o) for o in result]
            else:
                rec["object"] = slim(result) if isinstance(result, dict) else None
        except Exception as exc:  # one call's failure is a record, never a crash
            status, code, reason = _classify(exc)
            rec.update(status=status, http_status=code, reason=reason)
            if status == "unreachable":
                self.given_up = ("unreachable", f"the API server was unreachable ({reason})")
            elif status == "timeout" and not self._answering():
                # A stopped or wedged apiserver still completes TCP handshakes: every call
                # would wait out its own timeout. One slow resource on a live server does not
                # stop the others.
                self.given_up = ("timeout", f"the API server stopped answering ({reason})")
        rec["duration_s"] = round(time.monotonic() - started, 3)
        # when the answer was read, by the server's clock (its Date header; this machine's
        # when there was none): how old a change the answer shows was then (a Service port's
        # endpoints changed a second ago are still settling, a lease not renewed for a minute
        # has lost its holder)
        rec["read_at"] = server_date or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.calls.append(rec)
        return rec

    def _answering(self) -> bool:
        if self.health is None:
            return True
        try:
            self.health()
        except Exception:  # any failure of the cheapest call says the server is not serving
            return False
        return True

    def get(self, fn: Callable[..., Any], *args: Any) -> Callable[[], tuple[Any, dict]]:
        def thunk() -> tuple[Any, dict]:
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout)
            return self._body(resp), {"pages": 1, "server_date": _server_date(resp)}

        return thunk

    def list(self, fn: Callable[..., Any], *args: Any) -> Callable[[], tuple[Any, dict]]:
        from kubernetes.client.exceptions import ApiException

        def thunk() -> tuple[Any, dict]:
            items: list = []
            token: str | None = None
            pages = restarts = 0
            while True:
                try:
                    resp = fn(
                        *args,
                        limit=self.page_size,
                        _continue=token,
                        _preload_content=False,
                        _request_timeout=self.timeout,
                    )
                except ApiException as exc:
                    if exc.status == 410 and token and restarts < self.max_restarts:
                        # The snapshot behind the token is gone: the only consistent answer
                        # is a fresh list from the start.
                        items, token, restarts = [], None, restarts + 1
                        continue
                    raise
                body = self._body(resp)
                pages += 1
                if not isinstance(body, dict):
                    raise ValueError("a list answer that is not a JSON object")
                page = body.get("items")
                items.extend(page if isinstance(page, list) else [])
                meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
                token = meta.get("continue") or None
                if not token:
                    return items, {"pages": pages, "restarts": restarts,
                                   "server_date": _server_date(resp)}

        return thunk


# ---------------------------------------------------------------- the collection


def _cni_daemonsets(items: list | None) -> list[dict]:
    out = []
    for ds in items or []:
        meta = ds.get("metadata") if isinstance(ds, dict) else None
        name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        if any(m in name for m in CNI_MARKERS):
            out.append(ds)
    return out


def collect_cluster(
    api: Any,
    source: dict,
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    page_size: int = PAGE_SIZE,
    max_restarts: int = MAX_LIST_RESTARTS,
) -> dict:
    """Every call the cluster facts need, as the cluster.json document."""
    from kubernetes import client

    started = time.monotonic()
    s = _Session(api, connect_timeout, read_timeout, page_size, max_restarts)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    version = client.VersionApi(api)
    s.health = lambda: version.get_code(_request_timeout=(connect_timeout, min(read_timeout, 5.0)))
    s.run("version", "/version", s.get(version.get_code))
    s.run("nodes", "/api/v1/nodes", s.list(core.list_node))
    ds = s.run(
        "daemonsets", "/apis/apps/v1/daemonsets", s.list(apps.list_daemon_set_for_all_namespaces)
    )
    cni = _cni_daemonsets(ds["items"])
    # Every namespace's pods: a Service's selector, its named targetPort and a NetworkPolicy's
    # podSelector are answered by the pods of its own namespace, wherever that is.
    s.run("pods", "/api/v1/pods", s.list(core.list_pod_for_all_namespaces), slim=_slim_pod)
    s.run("namespaces", "/api/v1/namespaces", s.list(core.list_namespace))

    flannel = [d for d in cni if "flannel" in str(d["metadata"].get("name"))]
    if flannel or ds["status"] != "ok":
        # try the flannel DaemonSet's own namespace first, then where manifests put it
        tries = [str(d["metadata"].get("namespace")) for d in flannel]
        tries += [n for n in ("kube-flannel", "kube-system") if n not in tries]
        for ns in tries:
            path = f"/api/v1/namespaces/{ns}/configmaps/{FLANNEL_CM}"
            rec = s.run(
                "flannel_config", path, s.get(core.read_namespaced_config_map, FLANNEL_CM, ns)
            )
            if rec["status"] != "not_found" or ns == tries[-1]:
                break
            s.calls.remove(rec)  # a miss in one candidate namespace is not a finding
    s.run(
        "kube_proxy_config",
        "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
        s.get(core.read_namespaced_config_map, "kube-proxy", "kube-system"),
    )
    s.run(
        "coredns_config",
        "/api/v1/namespaces/kube-system/configmaps/coredns",
        s.get(core.read_namespaced_config_map, "coredns", "kube-system"),
    )
    s.run("services", "/api/v1/services", s.list(core.list_service_for_all_namespaces))
    s.run(
        "endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices",
        s.list(client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces),
    )
    s.run(
        "networkpolicies",
        "/apis/networking.k8s.io/v1/networkpolicies",
        s.list(client.NetworkingV1Api(api).list_network_policy_for_all_namespaces),
    )
    # Who leads kube-controller-manager and when it last said so: a lease nobody renews means
    # no EndpointSlice follows its pods any more (read after the slices, so their age and the
    # lease's are measured alike). A 404 is an answer: no leader election, or a managed
    # control plane that keeps its leases out of sight.
    s.run(
        "controller_lease",
        f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{CONTROLLER_LEASE}",
        s.get(client.CoordinationV1Api(api).read_namespaced_lease, CONTROLLER_LEASE,
              "kube-system"),
    )
    custom = client.CustomObjectsApi(api)
    s.run(
        "calico_ippools",
        "/apis/crd.projectcalico.org/v1/ippools",
        s.list(custom.list_cluster_custom_object, "crd.projectcalico.org", "v1", "ippools"),
    )
    return {
        "schema": CLUSTER_SCHEMA,
        "queried": True,
        "reason": None,
        "source": source,
        "duration_s": round(time.monotonic() - started, 3),
        "calls": s.calls,
    }


def not_queried(reason: str) -> dict:
    """The cluster.json of a run that did not ask the API, saying why."""
    return {
        "schema": CLUSTER_SCHEMA,
        "queried": False,
        "reason": reason,
        "source": None,
        "duration_s": 0.0,
        "calls": [],
    }


def failed(source: dict, reason: str) -> dict:
    """The cluster.json of a collection that broke down as a whole (a bug, not the API)."""
    call = {
        "name": "collector",
        "path": "",
        "status": "error",
        "http_status": None,
        "reason": reason[:500],
        "duration_s": 0.0,
        "items": None,
    }
    return {
        "schema": CLUSTER_SCHEMA,
        "queried": True,
        "reason": None,
        "source": source,
        "duration_s": 0.0,
        "calls": [call],
    }


def collect_target(target: ApiTarget | None, why: str, **kw: Any) -> dict:
    """Load the client and collect; for the CLI, which has validated the target already."""
    if target is None:
        return not_queried(why)
    api, source = load_client(target)
    try:
        return collect_cluster(api, source, **kw)
    finally:
        api.close()


class BackgroundApiCollection:
    """The API side of a collection, run in a thread beside the node fan-out: the API is asked
    while the nodes are, not after them."""

    def __init__(
        self,
        resolved: tuple[ApiTarget | None, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        target, self.why = resolved
        # Loading the client here (not in the thread) makes a bad kubeconfig an input error
        # raised before any node is touched.
        self.client = load_client(target) if target else None
        self.timeouts = (connect_timeout, read_timeout)
        self.doc: dict | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.client is not None:
            self.thread = threading.Thread(target=self._run, name="cluster-api", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        api, source = self.client
        try:
            self.doc = collect_cluster(
                api, source, connect_timeout=self.timeouts[0], read_timeout=self.timeouts[1]
            )
        except Exception as exc:  # a collector bug must cost the cluster facts, not the run
            self.doc = failed(source, f"cluster collection failed: {exc!r}")
        finally:
            api.close()

    def result(self) -> dict:
        if self.thread is None:
            return not_queried(self.why)
        self.thread.join()
        return self.doc
