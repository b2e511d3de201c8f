"""A Kubernetes API stand-in for the lab: real HTTP, served from the lab's state file.

The official ``kubernetes`` client talks to it exactly as to a real API server (bearer token,
JSON, list pagination with ``limit``/``continue``, Status objects on errors), so the cluster
collector is tested over real sockets with real client code. It is read-only: GET only.

    python -m kubenetdiag_lab.apiserver --state WORKDIR/lab.json --port 0 \\
        --kubeconfig-out WORKDIR/kubeconfig [--forbid pods] [--slow pods=5] [--expire nodes=1]

Per-run behaviours, so error paths are testable (CLI flags, a JSON control file, or
``server.behaviour`` in-process):

* ``forbid``: resources answered with 403 Forbidden, e.g. ``["pods"]``;
* ``slow``: seconds to wait before answering a resource, e.g. ``{"pods": 5}``;
* ``expire``: how many continue tokens of a resource to refuse with 410 Gone before honouring
  them again, as when a list outlives etcd's compaction window.

The control file (``--control``, default ``apiserver-control.json`` beside the state file) is
re-read whenever it changes, and so is the state file, so injected faults show up at once.
It listens on 127.0.0.1 only: the lab runs it inside its client namespace, where loopback is
that namespace's own.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from kubenetdiag_lab import k8s_objects

HOST = "127.0.0.1"
GIT_VERSION = "v1.30.4"
CONTINUE_TTL_S = 300.0  # the real API keeps a list snapshot about five minutes
MAX_TOKENS = 1000
CONTEXT = "kubenetdiag-lab"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    namespaced: bool
    kind: str


RESOURCES: dict[str, Resource] = {
    "nodes": Resource("", "v1", False, "Node"),
    "pods": Resource("", "v1", True, "Pod"),
    "services": Resource("", "v1", True, "Service"),
    "configmaps": Resource("", "v1", True, "ConfigMap"),
    "daemonsets": Resource("apps", "v1", True, "DaemonSet"),
    "endpointslices": Resource("discovery.k8s.io", "v1", True, "EndpointSlice"),
    "networkpolicies": Resource("networking.k8s.io", "v1", True, "NetworkPolicy"),
    "ippools": Resource("crd.projectcalico.org", "v1", False, "IPPool"),
}
CALICO_GROUP = "crd.projectcalico.org"


@dataclass
class Behaviour:
    forbid: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)
    expire: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Behaviour:
        return cls(
            forbid={str(r) for r in d.get("forbid") or []},
            slow={str(k): float(v) for k, v in (d.get("slow") or {}).items()},
            expire={str(k): int(v) for k, v in (d.get("expire") or {}).items()},
        )

    def merged(self, other: Behaviour) -> Behaviour:
        return Behaviour(
            self.forbid | other.forbid,
            {**self.slow, **other.slow},
            {**self.expire, **other.expire},
        )


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status_body(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow answer in flight must not block shutdown
    allow_reuse_address = True

    def __init__(
        self,
        state_path: Path,
        port: int,
        token: str,
        behaviour: Behaviour,
        control_path: Path | None,
    ) -> None:
        super().__init__((HOST, port), _Handler)
        self.state_path = Path(state_path)
        self.token = token
        self.behaviour = behaviour  # tests may replace it between requests
        self.control_path = control_path
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), for tests
        self._lock = threading.Lock()
        self._state_key: tuple[int, int] | None = None
        self._objects: dict[str, list[dict]] = {}
        self._state: dict = {}
        self._rv = 0
        self._control_key: tuple[int, int] | None = None
        self._control = Behaviour()
        self._tokens: OrderedDict[str, tuple[float, tuple, list[dict], int]] = OrderedDict()
        self._expired_served: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # ---- state, re-read when the file changes -----------------------------------------

    def objects(self) -> tuple[dict, dict[str, list[dict]], str]:
        with self._lock:
            try:
                st = self.state_path.stat()
                key = (st.st_mtime_ns, st.st_size)
            except OSError:
                key = None
            if key != self._state_key or key is None:
                try:
                    state = json.loads(self.state_path.read_text(encoding="utf-8"))
                    if not isinstance(state, dict):
                        raise ValueError("lab state is not a JSON object")
                except (OSError, ValueError) as exc:
                    raise ApiError(
                        503, "ServiceUnavailable", f"lab state unreadable: {exc}"
                    ) from None
                self._state, self._objects = state, k8s_objects.build(state)
                self._state_key = key
                self._rv += 1
            return self._state, self._objects, str(self._rv)

    def current_behaviour(self) -> Behaviour:
        with self._lock:
            path = self.control_path
            if path is not None:
                try:
                    st = path.stat()
                    key = (st.st_mtime_ns, st.st_size)
                except OSError:
                    key = None
                if key != self._control_key:
                    self._control_key = key
                    try:
                        data = json.loads(path.read_text(encoding="utf-8")) if key else {}
                        self._control = Behaviour.from_dict(data if isinstance(data, dict) else {})
                    except (OSError, ValueError, TypeError, AttributeError):
                        self._control = Behaviour()  # a half-written file: act as if absent
            return self.behaviour.merged(self._control)

    # ---- continue tokens ----------------------------------------------------------------

    def new_token(self, query_key: tuple, items: list[dict], offset: int) -> str:
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._tokens[token] = (time.monotonic(), query_key, items, offset)
            while len(self._tokens) > MAX_TOKENS:
                self._tokens.popitem(last=False)
        return token

    def take_token(self, token: str, query_key: tuple, resource: str, expire: int) -> tuple:
        """(items, offset) of a live token for the same query, else 410 Gone."""
        with self._lock:
            entry = self._tokens.pop(token, None)
            if entry is not None and self._expired_served.get(resource, 0) < expire:
                self._expired_served[resource] = self._expired_served.get(resource, 0) + 1
                entry = None  # told to act as if compaction ate the snapshot
        if (
            entry is None
            or entry[1] != query_key
            or time.monotonic() - entry[0] > CONTINUE_TTL_S
        ):
            raise ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter.",
            )
        return entry[2], entry[3]


def _match_labels(obj: dict, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _match_fields(obj: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        k, _, v = term.replace("==", "=").partition("=")
        cur: Any = obj
        for part in k.strip().split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if str(cur if cur is not None else "") != v.strip():
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's urllib3 pool expects
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK and every request costs 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the test output is not the place for an access log

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.requests.append((self.command, self.path, code))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        try:
            code, body = self._get()
        except ApiError as exc:
            code, body = exc.code, status_body(exc.code, exc.reason, exc.message)
        except Exception as exc:  # a stand-in bug must show up as a 500, not a dropped socket
            code, body = 500, status_body(500, "InternalError", f"stand-in error: {exc!r}")
        # The client may have given up (its read timeout): then there is no one to tell.
        with contextlib.suppress(OSError):
            self._send(code, body)

    def _refuse(self) -> None:
        self._send(405, status_body(405, "MethodNotAllowed", "the lab API stand-in is read-only"))

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815

    def _get(self) -> tuple[int, dict]:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, {"status": "ok"}
        auth = self.headers.get("Authorization", "")
        want = f"Bearer {self.server.token}"
        if not hmac.compare_digest(auth.encode(), want.encode()):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        state, objects, rv = self.server.objects()
        calico = k8s_objects._cni(state) == "calico-bgp"
        if path == "/version":
            return 200, {
                "major": "1", "minor": GIT_VERSION.split(".")[1], "gitVersion": GIT_VERSION,
                "platform": "linux/amd64", "goVersion": "go1.22.5", "compiler": "gc",
                "gitCommit": "b3b5ecf0ac8a0c8f2a2a3b8e5c1a5e1c7f0b1d2e", "gitTreeState": "clean",
                "buildDate": "2024-08-14T19:10:25Z",
            }
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return 200, _group_list(calico)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if group == CALICO_GROUP and not calico:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return 200, _resource_list(group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 2:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res_name = rest[0]
        res = RESOURCES.get(res_name)
        if res is None or (res.group, res.version) != (group, version) or (
            namespace is not None and not res.namespaced
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        behaviour = self.server.current_behaviour()
        delay = behaviour.slow.get(res_name, 0.0)
        if delay > 0:
            time.sleep(delay)
        if res_name in behaviour.forbid:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            verb = "get" if len(rest) == 2 else "list"
            raise ApiError(
                403,
                "Forbidden",
                f'{res_name} is forbidden: User "system:serviceaccount:kube-system:kubenetdiag" '
                f'cannot {verb} resource "{res_name}" in API group "{group}"{where}',
            )
        items = [
            o for o in objects.get(res_name, [])
            if namespace is None or o["metadata"].get("namespace") == namespace
        ]
        if len(rest) == 2:
            for o in items:
                if o["metadata"]["name"] == rest[1]:
                    return 200, o
            raise ApiError(404, "NotFound", f'{res_name} "{rest[1]}" not found')
        return 200, self._list(res_name, res, namespace, items, query, rv, behaviour)

    def _list(
        self,
        res_name: str,
        res: Resource,
        namespace: str | None,
        items: list[dict],
        query: dict[str, str],
        rv: str,
        behaviour: Behaviour,
    ) -> dict:
        label_sel, field_sel = query.get("labelSelector", ""), query.get("fieldSelector", "")
        query_key = (res_name, namespace, label_sel, field_sel)
        token = query.get("continue")
        if token:
            items, offset = self.server.take_token(
                token, query_key, res_name, behaviour.expire.get(res_name, 0)
            )
        else:
            items = sorted(
                (
                    o for o in items
                    if _match_labels(o, label_sel) and _match_fields(o, field_sel)
                ),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            )
            offset = 0
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "limit must be an integer") from None
        end = len(items) if limit <= 0 else min(len(items), offset + limit)
        meta: dict[str, Any] = {"resourceVersion": rv}
        if end < len(items):
            # The token pins this snapshot, as the real API pins an etcd revision.
            meta["continue"] = self.server.new_token(query_key, items, end)
            meta["remainingItemCount"] = len(items) - end
        api_version = f"{res.group}/{res.version}" if res.group else res.version
        return {
            "kind": f"{res.kind}List",
            "apiVersion": api_version,
            "metadata": meta,
            "items": items[offset:end],
        }


def _group_list(calico: bool) -> dict:
    groups = sorted({r.group for r in RESOURCES.values() if r.group})
    if not calico:
        groups.remove(CALICO_GROUP)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
            }
            for g in groups
        ],
    }


def _resource_list(group: str, version: str) -> dict:
    gv = f"{group}/{version}" if group else version
    resources = [
        {
            "name": name,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["get", "list"],
        }
        for name, r in RESOURCES.items()
        if (r.group, r.version) == (group, version)
    ]
    if not resources:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


# ---------------------------------------------------------------- kubeconfig and start


def write_kubeconfig(path: Path, url: str, token: str, context: str = CONTEXT) -> None:
    """A kubeconfig for the stand-in; 0600 because it holds the bearer token."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": f"{context}-user", "user": {"token": token}}],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": f"{context}-user"}}
        ],
        "current-context": context,
        "preferences": {},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    tmp.replace(path)


def default_control_path(state_path: Path) -> Path:
    return Path(state_path).with_name("apiserver-control.json")


def start(
    state_path: Path | str,
    port: int = 0,
    *,
    token: str | None = None,
    forbid: Iterable[str] = (),
    slow: Mapping[str, float] | None = None,
    expire: Mapping[str, int] | None = None,
    control_path: Path | str | None = None,
    kubeconfig_out: Path | str | None = None,
) -> tuple[ApiServer, threading.Thread]:
    """Serve in a daemon thread; ``server.url``, ``server.token``; stop with ``server.stop()``."""
    behaviour = Behaviour(set(forbid), dict(slow or {}), dict(expire or {}))
    server = ApiServer(
        Path(state_path),
        port,
        token or secrets.token_urlsafe(24),
        behaviour,
        Path(control_path) if control_path else None,
    )
    if kubeconfig_out:
        write_kubeconfig(Path(kubeconfig_out), server.url, server.token)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="lab-apiserver",
        daemon=True,
    )
    thread.start()
    return server, thread


def _pairs(values: list[str], conv: type) -> dict:
    out = {}
    for v in values:
        name, sep, num = v.partition("=")
        if not sep:
            raise SystemExit(f"expected RESOURCE=NUMBER, got {v!r}")
        try:
            out[name] = conv(num)
        except ValueError:
            raise SystemExit(f"expected RESOURCE=NUMBER, got {v!r}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kubenetdiag_lab.apiserver",
        description="Serve the lab's Kubernetes API objects on 127.0.0.1 (read-only).",
    )
    p.add_argument("--state", required=True, type=Path, help="the lab's lab.json")
    p.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    p.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for this server here")
    p.add_argument("--token", help="bearer token to require (default: a random one)")
    p.add_argument("--control", type=Path,
                   help="JSON control file (default: apiserver-control.json beside --state)")
    p.add_argument("--forbid", action="append", default=[], metavar="RESOURCE",
                   help="answer 403 for this resource, e.g. pods (repeatable)")
    p.add_argument("--slow", action="append", default=[], metavar="RESOURCE=SECONDS",
                   help="wait this long before answering the resource (repeatable)")
    p.add_argument("--expire", action="append", default=[], metavar="RESOURCE=COUNT",
                   help="refuse this many continue tokens of the resource with 410 Gone")
    args = p.parse_args(argv)
    server, thread = start(
        args.state,
        args.port,
        token=args.token,
        forbid=args.forbid,
        slow=_pairs(args.slow, float),
        expire=_pairs(args.expire, int),
        control_path=args.control or default_control_path(args.state),
        kubeconfig_out=args.kubeconfig_out,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"lab API stand-in listening on {server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
