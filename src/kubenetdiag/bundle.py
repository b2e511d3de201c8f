"""The bundle: the directory that holds everything collected, and later what was concluded.

It is the seam between collection and analysis: `collect` writes one, `analyze` reads one with
no network at all, so an air-gapped site can carry it out on a USB stick. A bundle may come from
anywhere, so reading one validates it before anything trusts its contents.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema

from kubenetdiag import __version__
from kubenetdiag.errors import InputError
from kubenetdiag.files import NotRegularFile, TooLarge, read_at_most

BUNDLE_SCHEMA = "kubenetdiag/bundle/v1"
FACTS_SCHEMA = "kubenetdiag/facts/v1"
MAX_NODE_FILE = 256 * 1024 * 1024  # also cluster.json
MAX_META_FILE = 64 * 1024 * 1024  # a node list of a million names fits
CLUSTER_FILE = "cluster.json"
CLUSTER_SCHEMA = "kubenetdiag/cluster/v1"  # the collector writes the same string

_META = {
    "type": "object",
    "required": ["schema", "tool_version", "started_at", "finished_at", "transport", "nodes"],
    "properties": {
        "schema": {"const": BUNDLE_SCHEMA},
        "tool_version": {"type": "string"},
        "started_at": {"type": "string"},
        "finished_at": {"type": "string"},
        "transport": {"enum": ["ssh", "local", "mixed"]},
        "inventory": {"type": ["string", "null"]},
        "nodes": {"type": "array", "items": {"type": "string"}},
        # The passive probes the collection ran (kubenetdiag.probes.probe_names()); older
        # bundles have none, and their analysis takes the probes any node answered for.
        "probes": {"type": "array", "items": {"type": "string"}},
        # The active checks the collecting version had (kubenetdiag.probes.active.checks());
        # absent in older bundles, whose analysis takes the checks any node has sections of.
        "active_checks": {"type": "array", "items": {"type": "string"}},
        # Ctrl-C stopped the collection: the nodes not reached say "not collected: interrupted"
        "interrupted": {"type": "boolean"},
        # `bundle redact` or `collect --redact` wrote it (kubenetdiag.redact)
        "redacted": {
            "type": "object",
            "properties": {"secrets": {"type": "boolean"}, "names": {"type": "boolean"}},
        },
    },
}
_SECTION = {
    "type": "object",
    "required": ["probe", "command", "exit_code", "stdout", "stderr"],
    "properties": {
        "probe": {"type": "string"},
        "command": {"type": "string"},
        "exit_code": {"type": ["integer", "null"]},
        "duration_s": {"type": "number"},
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "truncated": {"type": "boolean"},
    },
}
_ACTIVE = {
    "type": "object",
    "properties": {
        "skipped": {"type": "string"},
        "plan": {"type": "object"},
        "tools": {"type": "array", "items": {"type": "string"}},
        "podns": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "duration_s": {"type": "number"},
        "sections": {"type": "array", "items": _SECTION},
    },
}
_NODE = {
    "type": "object",
    "required": ["name", "address", "reachable", "error", "sections"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "address": {"type": "string"},
        "reachable": {"type": "boolean"},
        "error": {"type": ["string", "null"]},
        # a time spent: never negative (the report, which shows it, says so too)
        "duration_s": {"type": "number", "minimum": 0},
        "sections": {"type": "array", "items": _SECTION},
        # Optional (older bundles have none): the active phase, see docs/contracts.md.
        "active": _ACTIVE,
    },
}


_CALL = {
    "type": "object",
    "required": ["name", "path", "status", "http_status", "reason", "duration_s", "items"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "path": {"type": "string"},
        "status": {
            "enum": [
                "ok", "forbidden", "unauthorized", "not_found", "timeout", "unreachable", "error",
            ]
        },
        "http_status": {"type": ["integer", "null"]},
        "reason": {"type": ["string", "null"]},
        "duration_s": {"type": "number"},
        "read_at": {"type": "string"},
        "pages": {"type": "integer"},
        "restarts": {"type": "integer"},
        "items": {"type": ["array", "null"]},
        "object": {"type": ["object", "null"]},
    },
}
# cluster.json: what the Kubernetes API said, one record per call (docs/contracts.md).
# Optional in a bundle: older bundles and runs that did not ask the API have none.
_CLUSTER = {
    "type": "object",
    "required": ["schema", "queried", "source", "calls"],
    "properties": {
        "schema": {"const": CLUSTER_SCHEMA},
        "queried": {"type": "boolean"},
        "reason": {"type": ["string", "null"]},
        "source": {
            "type": ["object", "null"],
            "properties": {
                "kubeconfig": {"type": ["string", "null"]},
                "context": {"type": ["string", "null"]},
                "server": {"type": ["string", "null"]},
                "in_cluster": {"type": "boolean"},
            },
            # no credentials, ever: a bundle travels on USB sticks and into tickets
            "additionalProperties": False,
        },
        "duration_s": {"type": "number"},
        "calls": {"type": "array", "items": _CALL},
    },
}


# Built once: jsonschema.validate() re-checks the schema itself on every call, which cost
# more than validating a whole bundle.
_META_CHECK, _NODE_CHECK, _CLUSTER_CHECK = (
    jsonschema.Draft202012Validator(schema) for schema in (_META, _NODE, _CLUSTER)
)


@dataclass
class Bundle:
    """One run's collection in memory: what its directory holds (see docs/contracts.md)."""

    path: Path
    meta: dict[str, Any]
    records: list[dict]
    cluster: dict[str, Any] | None = None

    @classmethod
    def read(cls, path: Path) -> Bundle:
        meta, records = read_bundle(path)
        return cls(path, meta, records, read_cluster(path))

    def write(self) -> None:
        write_bundle(self.path, self.meta, self.records)
        if self.cluster is not None:
            write_cluster(self.path, self.cluster)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def safe_name(name: str) -> str:
    """A file name for a node that cannot escape the bundle (node names are user input)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "node"
    return cleaned[:100]


def prepare_dir(path: Path) -> None:
    """Refuse to write a bundle over anything: an old bundle (it would corrupt the evidence of
    both) or any directory with files in it (`-o .` must not replace a file of the same name)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{path} exists and is not a directory", hint="choose another path")
    if (path / "meta.json").exists():
        raise InputError(
            f"{path} already holds a bundle",
            hint="choose a new directory; keep the old bundle as the record of its run",
        )
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path} is not empty",
                         hint="give a new or empty directory: the bundle's files would "
                              "replace files of the same name there")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the bundle directory {path}: {exc.strerror}",
                         file=str(path), hint="choose a writable path") from None


def new_bundle_dir(parent: Path) -> Path:
    """A default bundle directory, created now, that no other run has: two runs started in the
    same second (a cron job and an SRE) each get their own."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = parent / (f"kubenetdiag-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot create a bundle directory in {parent}: {exc.strerror}",
                             hint="pass --bundle DIR on a writable filesystem") from None
        return path
    raise InputError(f"{parent} already has 999 bundles from this second", hint="pass --bundle")


def write_bundle(path: Path, meta: dict[str, Any], records: list[dict]) -> None:
    prepare_dir(path)
    nodes_dir = path / "nodes"
    nodes_dir.mkdir(exist_ok=True)
    used: set[str] = set()
    for rec in records:
        base = safe_name(rec["name"])
        fname, i = base, 1
        while fname in used:  # two names may clean to the same file name
            i += 1
            fname = f"{base}-{i}"
        used.add(fname)
        write_json(nodes_dir / f"{fname}.json", rec)
    meta = {"schema": BUNDLE_SCHEMA, "tool_version": __version__, **meta}
    meta["nodes"] = [r["name"] for r in records]
    _META_CHECK.validate(meta)
    write_json(path / "meta.json", meta)


def read_bundle(path: Path) -> tuple[dict[str, Any], list[dict]]:
    """Meta and node records, in the order the run listed the nodes."""
    if not path.is_dir():
        raise InputError(
            f"{path} is not a bundle directory", hint="pass the directory that `collect -o` wrote"
        )
    meta_path = path / "meta.json"
    if not meta_path.exists() and not meta_path.is_symlink():
        raise InputError(f"{path} has no meta.json: not a kubenetdiag bundle", file=str(path))
    meta = _read_json(meta_path, MAX_META_FILE)
    _validate(meta, _META_CHECK, meta_path)
    if not meta["nodes"]:
        raise InputError("the bundle holds no nodes: nothing was collected, so nothing can be "
                         "diagnosed", file=str(meta_path),
                         hint="collect again with an inventory that lists the nodes")
    nodes_dir = path / "nodes"
    if nodes_dir.is_symlink() or not nodes_dir.is_dir():
        raise InputError(f"{nodes_dir} is not a directory of the bundle", file=str(nodes_dir),
                         hint="copy the whole bundle directory, links resolved")
    records: dict[str, dict] = {}
    listed = set(meta["nodes"])
    for f in sorted(nodes_dir.glob("*.json")):
        rec = _read_json(f)
        _validate(rec, _NODE_CHECK, f)
        if rec["name"] not in listed:
            # two bundles merged by hand, or a file added: its node would vanish from the
            # report without a word, so the bundle is refused instead
            raise InputError(f"the node file holds node {rec['name']!r}, which meta.json does "
                             "not list", file=str(f),
                             hint="a bundle holds one collection: keep the node files of "
                                  "that run only, or collect again")
        if rec["name"] in records:
            raise InputError(f"a second node file for node {rec['name']!r}", file=str(f),
                             hint="a bundle holds one file per node: remove the copy")
        records[rec["name"]] = rec
    missing = [n for n in meta["nodes"] if n not in records]
    if missing:
        raise InputError(
            f"bundle lists nodes with no node file: {', '.join(missing[:5])}",
            file=str(meta_path),
            hint="the bundle is incomplete; copy the whole directory",
        )
    return meta, [records[n] for n in meta["nodes"]]


def write_cluster(path: Path, data: dict[str, Any]) -> None:
    """Write cluster.json into a bundle directory, refusing a document that breaks the schema."""
    _CLUSTER_CHECK.validate(data)
    write_json(path / CLUSTER_FILE, data)


def read_cluster(path: Path) -> dict[str, Any] | None:
    """The bundle's cluster.json, validated; None when the bundle has none."""
    f = path / CLUSTER_FILE
    if not f.exists() and not f.is_symlink():
        return None
    data = _read_json(f)
    _validate(data, _CLUSTER_CHECK, f)
    return data


# Read once: the mode a new file gets from open(2), which mkstemp's 0600 does not follow.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the whole new one.

    The temporary file has a fresh random name and is created exclusively (mkstemp), so no
    file or symbolic link planted beside the target (a bundle comes from anywhere) can
    redirect the write; a failure midway (a full disk) leaves the old file as it was. Lone
    surrogates (a JSON escape in a hostile bundle) are written as '?', not a crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
        os.replace(tmp, path)  # replaces a link at `path` itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    # No indent: json's C encoder only runs without one, and facts.json is ~200 KB per node
    # (10 MB at 50 lab nodes took 0.33 s indented, 0.08 s compact). `jq .` reads it for humans.
    write_text_atomic(path, json_text(data, ensure_ascii=False) + "\n")


def json_text(data: Any, **dumps: Any) -> str:
    """JSON that browsers and jq accept: a NaN or infinity (a node may print `rtt=nan`, which
    float() takes) becomes null instead of the bare NaN token json.dumps writes by default."""
    try:
        return json.dumps(data, allow_nan=False, **dumps)
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False, **dumps)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a bundle file: a regular file (no link followed, no FIFO or device
    opened for reading), at most `limit` bytes read whatever its size claims to be."""
    try:
        return read_at_most(path, limit, follow_links=False)
    except NotRegularFile:
        raise InputError(f"{path} is not a regular file (a device, FIFO or directory)",
                         file=str(path), hint="a bundle holds regular files only") from None
    except TooLarge:
        raise InputError(f"{path} is larger than {limit >> 20} MiB", file=str(path),
                         hint="a bundle file this large is not one kubenetdiag wrote") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link, not a file of the bundle",
                             file=str(path),
                             hint="a bundle holds regular files only; copy it with the links "
                                  "resolved if it is yours") from None
        raise InputError(f"cannot read {path}: {exc.strerror}", file=str(path)) from None


def _read_json(path: Path, limit: int | None = None) -> Any:
    data = read_regular(path, MAX_NODE_FILE if limit is None else limit)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except InputError as exc:
        raise InputError(exc.message, file=str(path), hint=exc.hint) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 (byte {exc.start})", file=str(path)) from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a bundle file",
                         file=str(path)) from None


def _no_constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number", hint="the bundle file was not written by "
                     "kubenetdiag or was edited by hand")


def _validate(data: Any, checker: jsonschema.protocols.Validator, path: Path) -> None:
    try:
        checker.validate(data)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise InputError(
            f"not a valid bundle file at {where}: {exc.message}",
            file=str(path),
            hint="the bundle is damaged or from an incompatible version; collect again",
        ) from None
