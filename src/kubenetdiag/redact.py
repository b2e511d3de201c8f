"""Redaction: a bundle made fit to hand to a vendor, a forum or a ticket.

Secrets always go, wherever they sit: flags and variables whose name says token, password,
secret, credential or key (`--token=...`, `DB_PASSWORD=...`, `"etcd_key": ...`, YAML
`token: ...`, a container's env entry), PEM private keys, bearer and basic credentials, JWTs
(service-account tokens), kubeadm bootstrap tokens and the password in a URL. JSON held inside
a string (an annotation such as last-applied-configuration) is redacted as JSON.

With `names`, IP addresses and the nodes' host names become tokens too, stable for one key, so
that the same node or address reads the same everywhere in the bundle (and in every bundle
redacted with the same key file). Addresses are mapped prefix-preservingly, the scheme
Crypto-PAn made standard for sharing packet traces: two addresses that share their first k bits
still do afterwards, so subnets, routes and the other CIDR arithmetic of the analysis come out
as on the original and the redacted bundle analyses to the same findings. Loopback,
unspecified, link-local and multicast addresses keep their meaning and stay as they are; the
last octet of IPv4 (the last 16 bits of IPv6) is kept so that a gateway `.1` stays `.1`.

Only the raw evidence is redacted (meta.json, nodes/, cluster.json): facts.json and report.json
are derived from it and are written again by `analyze` on the redacted copy.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenetdiag.bundle import Bundle, read_regular
from kubenetdiag.errors import InputError

REDACTED = "<redacted>"
# A name that says its value is a secret. Not "key" alone: a toleration's or a selector's
# `key` is a label name the analysis needs.
SECRET_NAME = re.compile(
    r"passw|secret|token|credential|api[-_]?key|access[-_]?key|private[-_]?key|key[-_]data"
    r"|auth[-_]?key|fastopen_key",
    re.I,
)
_NAME = r"[\w.-]*(?:" + SECRET_NAME.pattern + r")[\w.-]*"

_PEM = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(?:-----END \1PRIVATE KEY-----|\Z)"
)
# --token=abc, --password abc (a space-separated value only when it is not the next flag)
_FLAG = re.compile(
    rf"(?i)(?<![\w-])(--?{_NAME})(=|[ \t]+(?!-))(\"[^\"]*\"|'[^']*'|[^\s\"']+)"
)
# KEY=value (environment, URL query): up to the next space or separator
_ASSIGN = re.compile(
    rf"(?i)(?<![\w.-])([A-Za-z_]{_NAME}|{_NAME})(=)(\"[^\"]*\"|'[^']*'|[^\s&;,\"']+)"
)
# "key": "value" (JSON) and key: value (YAML): a YAML value runs to the end of its line
_COLON = re.compile(
    rf"(?i)([\"']?(?<![\w.-]){_NAME}[\"']?)([ \t]*:[ \t]*)"
    r"(\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s,{}\[\]\"'][^\n,}\]]*)"
)
_BEARER = re.compile(
    r"(?i)(\bbearer|authorization:[ \t]*basic)([ \t]+)([\w.~+/-]{8,}=*)"
)
_JWT = re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]*")
_BOOTSTRAP = re.compile(r"(?<![\w.-])[a-z0-9]{6}\.[a-z0-9]{16}(?![\w.-])")
_USERINFO = re.compile(r"(://[^/\s:@]+):([^/\s@]+)@")

# Addresses that keep their meaning (the analysis asks "is this loopback?"), left as they are.
_KEPT = {
    4: [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16",
                                           "224.0.0.0/3")],
    6: [ipaddress.ip_network(n) for n in ("::/127", "fe80::/10", "ff00::/8")],
}
_KEEP_LOW = {4: 8, 6: 16}  # host bits kept as they were: a gateway .1 stays .1
_ADDRESS = re.compile(
    r"(?<![\w:.])(?P<v6>(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?)(?:/(?P<len6>\d{1,3}))?(?![\w:]|\.\d)"
    # an IPv4 address may follow a colon: "addr:10.0.0.1", and be followed by ":port", or by
    # ".port" as tcpdump prints it ("10.0.0.1.8472 > ..."); other dotted runs are no address
    r"|(?<![\w.])(?P<v4>(?:\d{1,3}\.){3}\d{1,3})(?:/(?P<len4>\d{1,2}))?"
    r"(?:(?=\.\d{1,5}(?:[\s:>,]|$))|(?!\w|\.\d))"
)
MIN_NAME_IN_TEXT = 4  # shorter host names are replaced in whole values only, not inside text


class Redactor:
    """Redacts strings and JSON values; `names` adds address and host-name tokens."""

    def __init__(self, names: bool = False, key: bytes | None = None,
                 hosts: set[str] | frozenset[str] = frozenset()) -> None:
        self.names = names
        self.key = key if key is not None else os.urandom(32)
        self.counts: Counter[str] = Counter()
        self._addresses: dict[str, str] = {}
        self._bits: dict[tuple[int, int, int], int] = {}
        self._hosts: dict[str, str] = {}
        for host in sorted(hosts):
            self._add_host(host)
        text_names = [h for h in self._hosts if len(h) >= MIN_NAME_IN_TEXT]
        longest_first = sorted(text_names, key=len, reverse=True)
        # A name inside a hyphenated one is replaced too: static pods and DaemonSet pods are
        # named after their node (kube-apiserver-master1, client-node1-1). A longer name
        # holding it (node10) is not: the match must not run on into letters or digits.
        self._host_re = re.compile(
            r"(?<![\w.])(" + "|".join(map(re.escape, longest_first)) + r")(?!\w|\.\w)"
        ) if text_names else None

    def summary(self) -> str:
        """One line for the terminal: what was replaced."""
        secrets = {k: v for k, v in self.counts.items() if k != "address"}
        text = (f"{sum(secrets.values())} secret(s) removed"
                + (f" ({', '.join(f'{v} {k}' for k, v in sorted(secrets.items()))})"
                   if secrets else ""))
        if self.names:
            text += (f"; {self.counts['address']} address(es) and "
                     f"{len({h for h in self._hosts if '.' not in h})} host name(s) replaced "
                     "by tokens")
        return text

    # ------------------------------------------------------------ secrets

    def text(self, s: str) -> str:
        s = self._secrets(s)
        return self._pseudonymize(s) if self.names else s

    def _secrets(self, s: str) -> str:
        if _looks_like_json(s):
            try:
                inner = json.loads(s)
            except (ValueError, RecursionError):
                pass
            else:
                if isinstance(inner, dict):
                    return json.dumps(self._secret_value(inner), ensure_ascii=False)
        s = self._sub(_PEM, s, "private key", lambda m: REDACTED)
        s = self._sub(_FLAG, s, "flag", _keep_name)
        s = self._sub(_ASSIGN, s, "variable", _keep_name)
        s = self._sub(_COLON, s, "field", _keep_name)
        s = self._sub(_BEARER, s, "bearer", _keep_name)
        s = self._sub(_JWT, s, "jwt", lambda m: REDACTED)
        s = self._sub(_BOOTSTRAP, s, "bootstrap token", lambda m: REDACTED)
        return self._sub(_USERINFO, s, "url password", lambda m: f"{m.group(1)}:{REDACTED}@")

    def _sub(self, pattern: re.Pattern, s: str, kind: str,
             repl: Callable[[re.Match], str]) -> str:
        def counted(m: re.Match) -> str:
            out = repl(m)
            if out != m.group(0):
                self.counts[kind] += 1
            return out
        return pattern.sub(counted, s) if s else s

    def _secret_value(self, obj: Any) -> Any:
        """Secrets out of a JSON value, by the names its keys give as well as by text."""
        if isinstance(obj, str):
            return self._secrets(obj)
        if isinstance(obj, list):
            return [self._secret_value(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        out = {}
        # an env entry: {"name": "DB_PASSWORD", "value": "..."}
        env_secret = isinstance(obj.get("name"), str) and SECRET_NAME.search(obj["name"])
        for k, v in obj.items():
            if isinstance(v, str) and v and v != REDACTED and (
                SECRET_NAME.search(str(k)) or (env_secret and k == "value")
            ):
                out[k] = REDACTED
                self.counts["field"] += 1
            else:
                out[k] = self._secret_value(v)
        return out

    # ------------------------------------------------------------ names and addresses

    def value(self, obj: Any) -> Any:
        """A JSON value with secrets removed (and names replaced, with `names`)."""
        obj = self._secret_value(obj)
        return self._names_value(obj) if self.names else obj

    def _names_value(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self._pseudonymize(obj)
        if isinstance(obj, list):
            return [self._names_value(v) for v in obj]
        if isinstance(obj, dict):
            # a key is replaced only whole: a label key such as node-role.kubernetes.io/master
            # keeps its meaning when a node is called "master"
            return {self._hosts.get(k, _ADDRESS.sub(self._address, k)) if isinstance(k, str)
                    else k: self._names_value(v) for k, v in obj.items()}
        return obj

    def _pseudonymize(self, s: str) -> str:
        if s in self._hosts:  # a whole value: any length of name
            return self._hosts[s]
        if self._host_re is not None:
            s = self._host_re.sub(lambda m: self._hosts[m.group(1)], s)
        return _ADDRESS.sub(self._address, s)

    def _add_host(self, name: str) -> None:
        if not name or _is_address(name) or name in self._hosts:
            return
        first, _, rest = name.partition(".")
        token = self._token("node", first)
        self._hosts.setdefault(first, token)
        if rest:
            self._hosts[name] = f"{token}.{self._token('domain', rest)}"

    def _token(self, kind: str, name: str) -> str:
        digest = hmac.new(self.key, f"{kind}:{name}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:10]}"

    def _address(self, m: re.Match) -> str:
        text = m.group(0)
        if text not in self._addresses:
            self._addresses[text] = self._map_address(m)
        return self._addresses[text]

    def _map_address(self, m: re.Match) -> str:
        raw = m.group("v6") or m.group("v4")
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            return m.group(0)  # a time, a MAC, a version: not an address
        given = m.group("len6") or m.group("len4")
        length = int(given) if given is not None else None
        if length is not None and length > addr.max_prefixlen:
            return m.group(0)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            # ::ffff:10.0.0.1 stays written that way, its IPv4 part mapped as IPv4
            inner = self._map_int(addr.ipv4_mapped, None)
            changed, out = inner != addr.ipv4_mapped, f"::ffff:{inner}"
        else:
            mapped = self._map_int(addr, length)
            changed, out = mapped != addr, str(mapped)
        if changed:
            self.counts["address"] += 1
        return out + (f"/{length}" if length is not None else "")

    def _map_int(self, addr: Any, length: int | None) -> Any:
        if any(addr in net for net in _KEPT[addr.version]):
            return addr
        width = addr.max_prefixlen
        value = int(addr)
        top = width - _KEEP_LOW[addr.version]
        host_zero = length is not None and value & ((1 << (width - length)) - 1) == 0
        out = 0
        for i in range(top):
            bit = (value >> (width - 1 - i)) & 1
            prefix = value >> (width - i) if i else 0
            out = (out << 1) | (bit ^ self._flip(addr.version, i, prefix))
        out = (out << (width - top)) | (value & ((1 << (width - top)) - 1))
        if host_zero and length is not None:
            # a network (10.244.0.0/16): its host bits stay zero, so it is still a network
            out &= ~((1 << (width - length)) - 1) & ((1 << width) - 1)
        return type(addr)(out)

    def _flip(self, version: int, i: int, prefix: int) -> int:
        """The bit that flips bit i of every address starting with `prefix`: 0 on the way to
        a kept block, so no address is mapped into or out of one (the mapping stays one to
        one), else one bit of a keyed hash of the prefix."""
        key = (version, i, prefix)
        if key not in self._bits:
            width = 32 if version == 4 else 128
            kept = False
            for net in _KEPT[version]:
                m = min(i, net.prefixlen)
                if prefix >> (i - m) == int(net.network_address) >> (width - m):
                    kept = True
                    break
            self._bits[key] = 0 if kept else hmac.new(
                self.key, f"{version}:{i}:{prefix}".encode(), hashlib.sha256).digest()[0] & 1
        return self._bits[key]


def _keep_name(m: re.Match) -> str:
    """The name and separator stay (the reader sees what was there), the value goes."""
    value = m.group(3)
    if value.strip("\"'") in (REDACTED, ""):
        return m.group(0)
    quote = value[0] if value[:1] in ("\"", "'") else ""
    return f"{m.group(1)}{m.group(2)}{quote}{REDACTED}{quote}"


def _looks_like_json(s: str) -> bool:
    t = s.strip()
    return len(t) > 1 and t[0] == "{" and t[-1] == "}"


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def bundle_hosts(meta: dict, records: list[dict], cluster: dict | None) -> set[str]:
    """The host names a bundle holds: its nodes, their addresses, the cluster's Node objects
    and the names those give themselves."""
    names = set(meta.get("nodes") or [])
    for rec in records:
        names.update(str(rec.get(k) or "") for k in ("name", "address"))
    for call in (cluster or {}).get("calls") or []:
        if call.get("name") != "nodes":
            continue
        for node in call.get("items") or []:
            if not isinstance(node, dict):
                continue
            names.add(str((node.get("metadata") or {}).get("name") or ""))
            for a in (node.get("status") or {}).get("addresses") or []:
                if isinstance(a, dict) and a.get("type") in ("Hostname", "InternalDNS",
                                                             "ExternalDNS"):
                    names.add(str(a.get("address") or ""))
    names.difference_update(("", "local", "localhost"))  # nobody is identified by these
    return names


def read_key(path: Path) -> bytes:
    """The key of a key file, created (random, mode 0600) when the file does not exist yet:
    bundles redacted with the same file share their tokens."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise InputError(f"cannot create the key file {path}: {exc.strerror}", file=str(path),
                         hint="choose a writable path") from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
    try:
        data = read_regular(path, 4096).strip()
    except InputError as exc:
        raise InputError(exc.message, file=str(path),
                         hint="give a key file written by an earlier redaction") from None
    if len(data) < 16:
        raise InputError(f"{path} holds {len(data)} bytes: too short to be a key",
                         file=str(path), hint="give a key file written by an earlier "
                                              "redaction, or a new path to create one")
    return data


@dataclass(frozen=True)
class Redaction:
    """What a redaction removes: secrets always; addresses and host names with `names`,
    their tokens keyed by `key` (random when None: stable within one bundle only)."""

    names: bool = False
    key: bytes | None = None


def redact_bundle(bundle: Bundle, out: Path, how: Redaction) -> tuple[Bundle, Redactor]:
    """A redacted copy of `bundle` written at `out` (a new or empty directory), marked as
    redacted in its meta.json; the redactor's `counts` say what it replaced."""
    hosts = bundle_hosts(bundle.meta, bundle.records, bundle.cluster) if how.names else set()
    redactor = Redactor(names=how.names, key=how.key, hosts=hosts)
    meta = redactor.value(bundle.meta)
    if how.names and meta.get("inventory"):
        meta["inventory"] = Path(str(meta["inventory"])).name  # a home directory names its user
    meta["redacted"] = {"secrets": True, "names": how.names}
    copy = Bundle(out, meta, redactor.value(bundle.records),
                  redactor.value(bundle.cluster) if bundle.cluster is not None else None)
    copy.write()
    return copy, redactor
