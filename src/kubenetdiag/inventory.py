"""Read an Ansible YAML inventory into the hosts kubenetdiag will connect to.

SREs already describe their nodes in Ansible inventories, so we read those instead of inventing a
format. A YAML inventory is read here without Ansible: it is a heavy dependency, and during an
outage the tool must start on any jump box. The cost is that we re-implement the part of
Ansible's semantics that decides *where and how to connect*, and refuse (with file, line and a
hint) what we cannot honour safely: templates, host-key checking turned off. What only Ansible
reads (INI files, scripts, plugins, vaulted values) goes through ansible-core when it is
installed (load_with_ansible, at the end of this module), and is refused with a hint when not.

Variable precedence follows Ansible (lowest first):

1. inline ``vars:`` of the host's groups, ``all`` first, then by depth, priority and name
2. ``group_vars/`` files, in the same group order
3. inline host vars (a ``:port`` suffix counts as an inline ``ansible_port``)
4. ``host_vars/`` files

So ``group_vars/all.yml`` beats an inline child-group var, exactly as in ``ansible-playbook``.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import ipaddress
import math
import os
import re
import shlex
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from kubenetdiag.errors import InputError
from kubenetdiag.files import read_at_most
from kubenetdiag.yamlsrc import MAX_DEPTH, MAX_FILE_BYTES, YamlDoc, load_yaml_file

__all__ = ["Host", "expand_host_pattern", "load_inventory", "local_host"]

REDACTED = "***"

# An inventory that expands to millions of names is a typo ([1:100000] for [1:100]); refusing it
# early beats exhausting memory on the jump box in the middle of an outage.
MAX_HOSTS = 100_000

_GROUP_KEYS = ("hosts", "vars", "children")
# Ansible looks for NAME, NAME.yml, NAME.yaml, NAME.json in this order and uses the first hit only.
_VARS_EXTS = ("", ".yml", ".yaml", ".json")

# Ansible spells most connection settings two ways and its versions disagree about which spelling
# wins when both are set; we let the most specific definition win, whichever spelling it uses.
_ADDRESS = ("ansible_host", "ansible_ssh_host")
_PORT = ("ansible_port", "ansible_ssh_port")
_USER = ("ansible_user", "ansible_ssh_user")
_KEY_FILE = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_PASSWORD = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
_BECOME = ("ansible_become",)
_BECOME_USER = ("ansible_become_user",)
_CONNECTION = ("ansible_connection",)
_HOST_KEY_CHECKING = ("ansible_host_key_checking", "ansible_ssh_host_key_checking")
# ssh uses the first value it sees for an option, and Ansible passes these in this order.
_SSH_ARGS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")

_SSH_CONNECTIONS = {
    "ssh",
    "smart",
    "paramiko",
    "paramiko_ssh",
    "ansible.builtin.ssh",
    "ansible.builtin.paramiko_ssh",
}
_LOCAL_CONNECTIONS = {"local", "ansible.builtin.local"}

_SECRET_KEY = re.compile(
    r"pass|secret|token|vault|credential|api_?key|private_key(?!_file)", re.IGNORECASE
)
_VAULT_HEADER = "$ANSIBLE_VAULT;"
_VAULT_HINT = (
    "kubenetdiag decrypts vaulted values through ansible-core (pip install "
    "'kubenetdiag[ansible]'), with the vault password file Ansible is configured with "
    "(ANSIBLE_VAULT_PASSWORD_FILE); it never asks for a password. Without it, authenticate "
    "with an SSH key (ansible_ssh_private_key_file, or ssh-agent) and drop the vaulted value"
)
_INI_SECTION = re.compile(r"^\[[A-Za-z0-9_.:-]+\]\s*(?:[#;].*)?$")
_INI_HOST_LINE = re.compile(r"^[^\s#;:]+\s+\w+=\S")
_TEMPLATE = re.compile(r"\{\{|\{%")
_DIGITS = re.compile(r"[0-9]+")
_LETTER = re.compile(r"[A-Za-z]")
_RANGE = re.compile(r"\[([^\[\]]*)\]")

_Origin = tuple[str, int | None]


@dataclass(frozen=True)
class Host:
    """One node to connect to, with every setting resolved from the inventory."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    password: str | None = field(default=None, repr=False)
    become: bool = False
    become_user: str | None = None
    connection: str = "ssh"
    known_hosts: str | None = None
    strict_host_key: str = "yes"
    proxy_jump: str | None = None
    groups: tuple[str, ...] = ()
    # Hidden from repr because vars usually hold the same password under another name.
    vars: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # The collector's worker processes get their hosts pickled, and a mappingproxy does
        # not pickle: the vars travel as a dict and are wrapped again on arrival.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["vars"] = dict(self.vars)
        return (_host_from, (state,))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe view for reports and bundles, with every secret replaced by ``***``."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "password": None if self.password is None else REDACTED,
            "become": self.become,
            "become_user": self.become_user,
            "connection": self.connection,
            "known_hosts": self.known_hosts,
            "strict_host_key": self.strict_host_key,
            "proxy_jump": self.proxy_jump,
            "groups": list(self.groups),
            "vars": {str(k): _json_safe(v, str(k)) for k, v in self.vars.items()},
        }



def _host_from(state: dict[str, Any]) -> Host:
    return Host(**{**state, "vars": MappingProxyType(state["vars"])})

def _json_safe(value: Any, key: str | None = None) -> Any:
    if key is not None and value is not None and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        # A vaulted string can reach us under an innocent name; it is still a secret.
        return REDACTED if value.lstrip().startswith(_VAULT_HEADER) else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


# --------------------------------------------------------------------------- host name patterns


class _PatternError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_RANGE_HINT = (
    "write [START:END] or [START:END:STEP] with START <= END, both numbers (node[01:12]) "
    "or both single letters of the same case (rack[a:f])"
)


def _parse_range(body: str, pattern: str) -> tuple[int, Sequence[str] | range, int]:
    """Return (count, values, zero-pad width); numbers stay a lazy range until we know the total."""
    parts = body.split(":")
    if len(parts) not in (2, 3):
        raise _PatternError(f"bad host range [{body}] in {pattern!r}", _RANGE_HINT)
    start, end = parts[0], parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not _DIGITS.fullmatch(step_text) or int(step_text) < 1:
        raise _PatternError(
            f"bad step {step_text!r} in host range [{body}] of {pattern!r}",
            "the step must be a whole number of at least 1, e.g. node[01:20:2]",
        )
    step = int(step_text)
    if start == "":
        start = "0"  # Ansible reads [:N] as [0:N]
    if _DIGITS.fullmatch(start) and _DIGITS.fullmatch(end):
        padded = (len(start) > 1 and start[0] == "0") or (len(end) > 1 and end[0] == "0")
        if padded and len(start) != len(end):
            width = max(len(start), len(end))
            raise _PatternError(
                f"zero-padded host range [{body}] in {pattern!r} has start and end of "
                f"different widths ({len(start)} and {len(end)} digits)",
                f"pad both ends to the same width: [{start.zfill(width)}:{end.zfill(width)}]",
            )
        lo, hi = int(start), int(end)
        if lo > hi:
            raise _PatternError(f"host range [{body}] in {pattern!r} runs backwards", _RANGE_HINT)
        values = range(lo, hi + 1, step)
        return len(values), values, len(start) if padded else 0
    if _LETTER.fullmatch(start) and _LETTER.fullmatch(end):
        if start.islower() != end.islower():
            raise _PatternError(
                f"letter range [{body}] in {pattern!r} mixes upper and lower case", _RANGE_HINT
            )
        if start > end:
            raise _PatternError(f"host range [{body}] in {pattern!r} runs backwards", _RANGE_HINT)
        letters = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
        return len(letters), letters, 0
    raise _PatternError(f"bad host range [{body}] in {pattern!r}", _RANGE_HINT)


def _expand(pattern: str) -> list[str]:
    pieces: list[tuple[Sequence[str] | range, int]] = []
    literals: list[str] = []
    total = 1
    pos = 0
    for m in _RANGE.finditer(pattern):
        literals.append(pattern[pos : m.start()])
        count, values, width = _parse_range(m.group(1), pattern)
        pieces.append((values, width))
        total *= count
        pos = m.end()
    literals.append(pattern[pos:])
    if any("[" in lit or "]" in lit for lit in literals):
        raise _PatternError(f"unbalanced bracket in host name {pattern!r}", _RANGE_HINT)
    if total > MAX_HOSTS:
        raise _PatternError(
            f"host pattern {pattern!r} expands to {total} hosts (limit {MAX_HOSTS})",
            "check the range ends; this is almost always a typo",
        )
    names = [literals[0]]
    for (values, width), lit in zip(pieces, literals[1:], strict=True):
        texts = [str(v).zfill(width) if isinstance(v, int) else v for v in values]
        names = [f"{prefix}{t}{lit}" for prefix in names for t in texts]
    return names


def expand_host_pattern(pattern: str) -> list[str]:
    """Expand Ansible host ranges: ``node[01:03]`` -> node01, node02, node03.

    Supports numeric ranges (zero padding kept, widths must match), steps ``[1:9:2]``, single
    letters ``[a:f]`` and several ranges in one name. Raises InputError (without a location; the
    inventory loader adds one) on a malformed pattern.
    """
    try:
        return _expand(pattern)
    except _PatternError as exc:
        raise InputError(exc.message, hint=exc.hint) from None


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def _split_host_key(key: str) -> tuple[str, str | None]:
    """Split 'pattern[:port]'; IPv6 literals keep their colons."""
    if key.startswith("["):
        close = key.find("]")
        if close > 0 and _is_ipv6(key[1:close]):
            rest = key[close + 1 :]
            if rest == "":
                return key[1:close], None
            if rest.startswith(":"):
                return key[1:close], rest[1:]
            raise _PatternError(
                f"unexpected text {rest!r} after IPv6 address in {key!r}",
                "write [ADDRESS]:PORT, e.g. '[fd00::1]:2222'",
            )
    if _is_ipv6(key):
        return key, None
    depth = 0
    colon = -1
    for i, ch in enumerate(key):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == ":" and depth == 0:
            colon = i
    if colon < 0:
        return key, None
    return key[:colon], key[colon + 1 :]


def _port_from_text(text: str) -> int | None:
    if _DIGITS.fullmatch(text) and 1 <= int(text) <= 65535:
        return int(text)
    return None


# --------------------------------------------------------------------------- loading files


def _error(origin: _Origin, message: str, hint: str = "") -> InputError:
    return InputError(message, file=origin[0], line=origin[1], hint=hint)


def _read_quietly(path: Path) -> str | None:
    """The text of a file that failed to load, to explain why; None for anything that is not
    a readable regular file of sane size (a FIFO would block here)."""
    try:
        return read_at_most(path, MAX_FILE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):  # NotRegularFile and TooLarge are OSErrors
        return None


def _ini_line(text: str) -> int | None:
    """Line of the first thing that only an INI inventory would contain."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if _INI_SECTION.match(line) or _INI_HOST_LINE.match(line):
            return number
    return None


class NeedsAnsible(InputError):
    """An inventory only Ansible can read (INI, a script, a plugin, vaulted values): read
    through ansible-core when it is installed (load_with_ansible)."""


def _ini_error(file: str, line: int | None) -> InputError:
    return NeedsAnsible(
        "this looks like an INI inventory, which kubenetdiag reads through ansible-core",
        file=file,
        line=line,
        hint=ANSIBLE_HINT.replace("FILE", file),
    )


def _explain_load_failure(text: str, file: str, inventory: bool) -> None:
    """Turn a bare YAML failure into the real reason when we can recognise it."""
    if text.lstrip().startswith(_VAULT_HEADER):
        raise NeedsAnsible(
            "this file is encrypted with Ansible Vault, which kubenetdiag reads through "
            "ansible-core only",
            file=file,
            line=1,
            hint=_VAULT_HINT,
        )
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            # Past the loader's nesting limit its own error is the reason; and PyYAML's
            # scanner slows with every open bracket (quadratic: a minute for 50,000).
            if isinstance(token, (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken)):
                depth += 1
                if depth > MAX_DEPTH:
                    break
            elif isinstance(token, (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)):
                depth -= 1
            if isinstance(token, yaml.TagToken) and token.value[0] == "!":
                line = token.start_mark.line + 1
                if token.value[1] == "vault":
                    raise NeedsAnsible(
                        "Ansible Vault values (!vault) are read through ansible-core only",
                        file=file,
                        line=line,
                        hint=_VAULT_HINT,
                    )
                if token.value[1] == "unsafe":
                    raise InputError(
                        "the !unsafe tag is not supported",
                        file=file,
                        line=line,
                        hint="kubenetdiag never evaluates templates, so the tag is not needed "
                        "here: remove it and keep the quoted string",
                    )
    except yaml.YAMLError:
        pass  # the loader's own syntax error is the better message
    if inventory:
        line = _ini_line(text)
        if line is not None:
            raise _ini_error(file, line)


def _load(path: Path, *, inventory: bool) -> YamlDoc:
    try:
        doc = load_yaml_file(path)
    except InputError:
        text = _read_quietly(path)
        if text is not None:
            _explain_load_failure(text, str(path), inventory)
        raise
    if isinstance(doc.data, str) and doc.data.lstrip().startswith(_VAULT_HEADER):
        _explain_load_failure(doc.data, doc.file, inventory)
    if inventory and not isinstance(doc.data, (dict, type(None))):
        text = _read_quietly(path) or ""
        line = _ini_line(text)
        if line is not None:
            raise _ini_error(doc.file, line)
    return doc


def _vars_files(folder: Path, name: str) -> list[Path]:
    # Names come from the inventory; never let one climb out of group_vars/ or host_vars/.
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        return []
    for ext in _VARS_EXTS:
        candidate = folder / f"{name}{ext}"
        if candidate.is_dir():
            return list(_walk_vars_dir(candidate))
        if candidate.is_file():
            return [candidate]
    return []


def _walk_vars_dir(folder: Path) -> Iterator[Path]:
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue  # hidden files and editor backups, as Ansible skips them
        if entry.is_dir() and not entry.suffix:
            yield from _walk_vars_dir(entry)
        elif entry.is_file() and entry.suffix in _VARS_EXTS:
            yield entry


# --------------------------------------------------------------------------- inventory model


@dataclass
class _Assign:
    key: str
    value: Any
    origin: _Origin


@dataclass
class _Group:
    name: str
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    inline: list[_Assign] = field(default_factory=list)
    files: list[_Assign] = field(default_factory=list)
    priority: int = 0


@dataclass
class _HostEntry:
    name: str
    groups: list[str] = field(default_factory=list)
    inline: list[_Assign] = field(default_factory=list)
    files: list[_Assign] = field(default_factory=list)
    port: _Assign | None = None


def _key(key: Any) -> str:
    # yamlsrc records non-string keys under str(key); we must look them up the same way.
    return key if isinstance(key, str) else str(key)


def _is_vault_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and "__ansible_vault" in value


class _Parser:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.groups: dict[str, _Group] = {"all": _Group("all")}
        self.hosts: dict[str, _HostEntry] = {}
        self.expanded = 0  # host names made by every pattern so far, repeats included

    def origin(self, path: tuple[str | int, ...]) -> _Origin:
        return (self.doc.file, self.doc.line_of(path))

    def name_of(self, key: Any, path: tuple[str, ...], what: str) -> str:
        if isinstance(key, str):
            return key
        if isinstance(key, bool) or key is None:
            hint = "quote it: unquoted yes/no/on/off/true/false/null are not text in YAML"
        else:
            hint = "quote it, so YAML keeps it exactly as written (0123 would become 83)"
        raise self.doc.error(
            path, f"{what} name {key!r} is not text: YAML read it as {type(key).__name__}", hint
        )

    def parse(self) -> None:
        data = self.doc.data
        if data is None:
            raise InputError(
                "the inventory is empty",
                file=self.doc.file,
                hint="list your nodes under all: hosts:, e.g.\nall:\n  hosts:\n    node1:",
            )
        if not isinstance(data, dict):
            raise self.doc.error(
                (),
                f"the top level of an inventory must be a mapping of group names, "
                f"not a {type(data).__name__}",
                "start the file with `all:` and list nodes under `hosts:`",
            )
        if isinstance(data.get("plugin"), str):
            raise self.doc.error(
                ("plugin",),
                f"this is a configuration for the dynamic inventory plugin {data['plugin']!r}",
                f"kubenetdiag reads static inventories; export one with: "
                f"ansible-inventory -i {self.doc.file} --list -y > inventory.yml",
            )
        if "_meta" in data:
            raise self.doc.error(
                ("_meta",),
                "this is `ansible-inventory --list` JSON output, not a YAML inventory",
                "export YAML instead: ansible-inventory -i SOURCE --list -y > inventory.yml",
            )
        for key, value in data.items():
            path = (_key(key),)
            name = self.name_of(key, path, "group")
            if name in _GROUP_KEYS:
                raise self.doc.error(
                    path,
                    f"`{name}:` at the top level; top-level keys are group names",
                    f"indent it under a group, e.g.\nall:\n  {name}:\n    ...",
                )
            self.group(name, value, path)

    def group(self, name: str, value: Any, path: tuple[str, ...]) -> None:
        group = self.groups.setdefault(name, _Group(name))
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.doc.error(
                path,
                f"group {name!r} must be a mapping with hosts, vars or children, "
                f"not a {type(value).__name__}",
                f"write\n{name}:\n  hosts:\n    node1:\n    node2:",
            )
        for key, sub in value.items():
            kpath = (*path, _key(key))
            if key == "hosts":
                self.group_hosts(group, sub, kpath)
            elif key == "vars":
                self.group_vars(group, sub, kpath)
            elif key == "children":
                self.group_children(group, sub, kpath)
            else:
                raise self.doc.error(
                    kpath,
                    f"unexpected key {key!r} in group {name!r}; a group may contain only "
                    f"{', '.join(_GROUP_KEYS)}",
                    self.bad_group_key_hint(name, key, sub),
                )

    @staticmethod
    def bad_group_key_hint(group: str, key: Any, value: Any) -> str:
        close = difflib.get_close_matches(str(key), _GROUP_KEYS, n=1, cutoff=0.6)
        if close:
            return f"did you mean `{close[0]}:`?"
        looks_like_host = value is None or (
            isinstance(value, dict) and any(str(k).startswith("ansible_") for k in value)
        )
        if looks_like_host:
            return (
                f"{key!r} looks like a host listed directly under the group; put it under "
                f"`hosts:`, e.g.\n{group}:\n  hosts:\n    {key}:"
            )
        return (
            f"put hosts under `hosts:`, group variables under `vars:` and subgroups under "
            f"`children:` of {group!r}"
        )

    def group_vars(self, group: _Group, value: Any, path: tuple[str, ...]) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.doc.error(
                path,
                f"vars of group {group.name!r} must be a mapping of names to values",
                "write one `name: value` per line under `vars:`",
            )
        for assign in self.assigns(value, path):
            group.inline.append(assign)
            if assign.key == "ansible_group_priority":
                # Ansible only honours this in the inventory itself, not in group_vars/.
                group.priority = _as_int(assign, "ansible_group_priority")

    def group_children(self, group: _Group, value: Any, path: tuple[str, ...]) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.doc.error(
                path,
                f"children of group {group.name!r} must be a mapping of group names",
                f"write each subgroup as a key ending in a colon, e.g.\n"
                f"{group.name}:\n  children:\n    workers:",
            )
        for key, sub in value.items():
            cpath = (*path, _key(key))
            child = self.name_of(key, cpath, "group")
            self.link(group.name, child, cpath)
            self.group(child, sub, cpath)

    def link(self, parent: str, child: str, path: tuple[str, ...]) -> None:
        if child == "all":
            raise self.doc.error(
                path,
                f"`all` is listed as a child of {parent!r}",
                "`all` already contains every group; remove it from children",
            )
        cycle = [child] if child == parent else self.path_between(child, parent)
        if cycle:
            chain = " -> ".join([parent, *cycle])
            raise self.doc.error(
                path,
                f"group cycle: {chain}",
                f"a group cannot contain itself; remove {child!r} from the children of {parent!r}",
            )
        group = self.groups.setdefault(child, _Group(child))
        if parent not in group.parents:
            group.parents.append(parent)
            self.groups[parent].children.append(child)

    def path_between(self, start: str, goal: str) -> list[str]:
        """Groups from start down to goal through children, or [] when goal is not below start."""
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen = set()
        while stack:
            name, trail = stack.pop()
            if name == goal:
                return trail
            if name in seen:
                continue
            seen.add(name)
            group = self.groups.get(name)
            for child in group.children if group else ():
                stack.append((child, [*trail, child]))
        return []

    def group_hosts(self, group: _Group, value: Any, path: tuple[str, ...]) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.doc.error(
                path,
                f"hosts of group {group.name!r} must be a mapping of host names, "
                f"not a {type(value).__name__}",
                "write each host as a key ending in a colon, not as a `- item`, e.g.\n"
                "hosts:\n  node1:\n  node2:",
            )
        for key, hvars in value.items():
            hpath = (*path, _key(key))
            text = self.name_of(key, hpath, "host")
            try:
                pattern, port_text = _split_host_key(text)
                names = _expand(pattern)
            except _PatternError as exc:
                raise self.doc.error(hpath, exc.message, exc.hint) from None
            if (
                not pattern
                or any(ch.isspace() for ch in pattern)
                or (":" in _RANGE.sub("", pattern) and not _is_ipv6(pattern))
            ):
                raise self.doc.error(
                    hpath,
                    f"bad host name {text!r}",
                    "a host name is one word; put variables in a mapping under it, e.g.\n"
                    "node1:\n  ansible_host: 10.0.0.1",
                )
            port: _Assign | None = None
            if port_text is not None:
                number = _port_from_text(port_text)
                if number is None:
                    raise self.doc.error(
                        hpath,
                        f"port {port_text!r} in host {text!r} is not an integer 1-65535",
                        "write NAME:PORT, e.g. node1:2222, or set ansible_port",
                    )
                port = _Assign("ansible_port", number, self.origin(hpath))
            if hvars is not None and not isinstance(hvars, dict):
                raise self.doc.error(
                    hpath,
                    f"host {text!r} must map to a mapping of variables or nothing, "
                    f"not a {type(hvars).__name__}",
                    f"if that is its address, write\n{text}:\n  ansible_host: {hvars}",
                )
            self.expanded += len(names)
            if self.expanded > MAX_HOSTS:
                # per pattern is not enough: 30 patterns of 100,000 each took minutes and GBs
                raise self.doc.error(
                    hpath,
                    f"the inventory's host patterns expand to more than {MAX_HOSTS} hosts in "
                    f"all (this one brings them to {self.expanded})",
                    "check the range ends; an inventory this large is almost always a typo",
                )
            assigns = self.assigns(hvars or {}, hpath)
            for name in names:
                self.add_host(name, group.name, assigns, port)

    def add_host(self, name: str, group: str, assigns: list[_Assign], port: _Assign | None) -> None:
        entry = self.hosts.get(name)
        if entry is None:
            entry = self.hosts[name] = _HostEntry(name, port=port)
        elif port is not None and entry.port is not None and port.value != entry.port.value:
            first = entry.port.origin
            raise _error(
                port.origin,
                f"host {name!r} is listed with port {port.value} here and with port "
                f"{entry.port.value} at {first[0]}:{first[1]}",
                "use one port per host, or set ansible_port under the host",
            )
        elif entry.port is None:
            entry.port = port
        if group not in entry.groups:
            entry.groups.append(group)
        entry.inline.extend(assigns)

    def assigns(self, mapping: dict[Any, Any], path: tuple[str, ...]) -> list[_Assign]:
        return _assigns(self.doc, mapping, path)


def _assigns(doc: YamlDoc, mapping: dict[Any, Any], path: tuple[str, ...]) -> list[_Assign]:
    out = []
    for key, value in mapping.items():
        vpath = (*path, _key(key))
        _refuse_vault(doc, value, vpath)
        out.append(_Assign(_key(key), value, (doc.file, doc.line_of(vpath))))
    return out


def _refuse_vault(doc: YamlDoc, value: Any, path: tuple[str | int, ...]) -> None:
    # `ansible-inventory --list` writes vaulted values as {"__ansible_vault": ...} in JSON.
    if _is_vault_mapping(value):
        raise NeedsAnsible("Ansible Vault values are read through ansible-core only",
                           file=doc.file, line=doc.line_of(path), hint=_VAULT_HINT)
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_vault(doc, v, (*path, _key(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_vault(doc, v, (*path, i))


def _load_vars_files(folder: Path, name: str) -> list[_Assign]:
    out: list[_Assign] = []
    for path in _vars_files(folder, name):
        doc = _load(path, inventory=False)
        if doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            raise doc.error(
                (),
                f"a {folder.name} file must be a mapping of variable names to values, "
                f"not a {type(doc.data).__name__}",
                "write one `name: value` per line",
            )
        out.extend(_assigns(doc, doc.data, ()))
    return out


# --------------------------------------------------------------------------- resolving a host


def _as_int(assign: _Assign, what: str) -> int:
    value = assign.value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    raise _error(assign.origin, f"{what} must be an integer, not {value!r}")


def _last(assigns: list[_Assign], names: tuple[str, ...]) -> _Assign | None:
    for assign in reversed(assigns):
        if assign.key in names:
            return assign
    return None


def _text(assign: _Assign | None, *, secret: bool = False) -> str | None:
    """The value as text, refusing values YAML silently turned into something else."""
    if assign is None or assign.value is None:
        return None
    value = assign.value
    if not isinstance(value, str):
        # YAML reads 0123 as 83 and 1e3 as 1000.0, so str() would connect with the wrong value.
        shown = "the value" if secret else repr(value)
        raise _error(
            assign.origin,
            f"{assign.key} must be text, but YAML read {shown} as {type(value).__name__}",
            "put the value in quotes",
        )
    if _TEMPLATE.search(value):
        raise _error(
            assign.origin,
            f"{assign.key} uses a Jinja template; kubenetdiag does not evaluate templates",
            "write the literal value for this host (host_vars/NAME.yml is a good place)",
        )
    if not value.strip():
        raise _error(assign.origin, f"{assign.key} is empty", "set a value or remove the line")
    return value


def _port(assign: _Assign | None) -> int:
    if assign is None:
        return 22
    value = assign.value
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        number = value
    elif isinstance(value, str):
        number = _port_from_text(value.strip())
    if number is None:
        raise _error(
            assign.origin,
            f"{assign.key} {value!r} is not an integer 1-65535",
            "set the SSH port as a number, e.g. ansible_port: 2222",
        )
    return number


_TRUE = {"yes", "y", "true", "t", "on", "1"}
_FALSE = {"no", "n", "false", "f", "off", "0"}


def _bool(assign: _Assign | None, default: bool) -> bool:
    if assign is None or assign.value is None:
        return default
    value = assign.value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _error(
        assign.origin,
        f"{assign.key} must be yes/no or true/false, not {value!r}",
        "write yes or no",
    )


def _connection(assign: _Assign | None) -> str:
    word = _text(assign)
    if assign is None or word is None or word.lower() in _SSH_CONNECTIONS:
        return "ssh"
    if word.lower() in _LOCAL_CONNECTIONS:
        return "local"
    raise _error(
        assign.origin,
        f"ansible_connection {word!r} is not supported",
        "kubenetdiag connects over ssh or runs locally; use ansible_connection: ssh or local",
    )


def _local_path(text: str, base: Path) -> str:
    expanded = os.path.expanduser(text)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    # Relative to the inventory, not to wherever the SRE happens to run the tool from.
    return os.path.normpath(base / expanded)


@dataclass
class _SshOptions:
    known_hosts: str | None = None
    strict: str | None = None
    proxy_jump: str | None = None


def _ssh_options(assign: _Assign, found: _SshOptions, base: Path) -> None:
    """Read the few ssh options that change how we connect; ssh keeps the first value given."""
    text = _text(assign)
    if text is None:
        return
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise _error(
            assign.origin, f"cannot split {assign.key}: {exc}", "check the quotes"
        ) from None
    options: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in ("-o", "-J"):
            if i >= len(tokens):
                raise _error(assign.origin, f"{token} without a value in {assign.key}")
            arg = tokens[i]
            i += 1
        elif token.startswith(("-o", "-J")):
            arg = token[2:]
        else:
            continue
        if token.startswith("-J"):
            options.append(("proxyjump", arg))
            continue
        name, sep, value = arg.partition("=")
        if not sep:
            name, _, value = arg.strip().partition(" ")
        if not value.strip() and i < len(tokens) and not tokens[i].startswith("-"):
            value = tokens[i]  # `-o UserKnownHostsFile PATH`, which users write and mean
            i += 1
        options.append((name.strip().lower(), value.strip()))

    for name, value in options:
        if name == "stricthostkeychecking":
            mode = value.lower()
            if mode in ("no", "off"):
                raise _error(
                    assign.origin,
                    f"{assign.key} turns off host key checking (StrictHostKeyChecking={value})",
                    "kubenetdiag never accepts unknown host keys silently; to trust a node's "
                    "key on first contact, opt in with -o StrictHostKeyChecking=accept-new",
                )
            if mode not in ("yes", "ask", "accept-new"):
                raise _error(
                    assign.origin,
                    f"unknown StrictHostKeyChecking value {value!r} in {assign.key}",
                    "use yes (the default) or accept-new",
                )
            # Nobody can answer ssh's question during a batch run, so `ask` behaves like `yes`.
            if found.strict is None:
                found.strict = "accept-new" if mode == "accept-new" else "yes"
        elif name == "userknownhostsfile" and found.known_hosts is None:
            found.known_hosts = " ".join(
                p if p in ("/dev/null", "none") else _local_path(p, base) for p in value.split()
            )
        elif name == "proxyjump" and found.proxy_jump is None:
            found.proxy_jump = value


def _build_host(
    entry: _HostEntry, groups: dict[str, _Group], order: dict[str, tuple[int, int, str]], base: Path
) -> Host:
    names = set(entry.groups) | {"all"}
    pending = list(names)
    while pending:
        for parent in groups[pending.pop()].parents:
            if parent not in names:
                names.add(parent)
                pending.append(parent)
    if names <= {"all"}:
        names.add("ungrouped")  # Ansible's implicit home for hosts listed only under all
    ranked = sorted(names, key=lambda g: order[g])

    assigns: list[_Assign] = []
    for name in ranked:
        assigns.extend(groups[name].inline)
    for name in ranked:
        assigns.extend(groups[name].files)
    if entry.port is not None:
        assigns.append(entry.port)
    assigns.extend(entry.inline)
    assigns.extend(entry.files)
    return host_from_vars(entry.name, assigns, ranked, base)


def host_from_vars(name: str, assigns: Sequence[_Assign] | Mapping[str, Any],
                   groups: Sequence[str], base: Path, origin: _Origin | None = None) -> Host:
    """A Host from a host's variables, in the order they were set (the last one wins), with
    every check the YAML reader makes. `assigns` may be a plain mapping (an inventory Ansible
    read, whose variables are already merged): each value then has `origin` for its errors."""
    if isinstance(assigns, Mapping):
        where = origin or (str(base), None)
        assigns = [_Assign(str(k), v, where) for k, v in assigns.items()]
    merged: dict[str, Any] = {}
    for assign in assigns:
        merged[assign.key] = assign.value
    # Hosts share the parsed group values; a copy keeps one host's edits off its neighbours.
    merged = copy.deepcopy(merged)

    checking = _last(assigns, _HOST_KEY_CHECKING)
    if checking is not None and not _bool(checking, True):
        raise _error(
            checking.origin,
            f"{checking.key} is false, which turns off host key checking",
            "kubenetdiag never accepts unknown host keys silently; remove it and, to trust a "
            "node's key on first contact, add ansible_ssh_common_args: "
            "-o StrictHostKeyChecking=accept-new",
        )
    ssh = _SshOptions()
    for key in _SSH_ARGS:
        assign = _last(assigns, (key,))
        if assign is not None:
            _ssh_options(assign, ssh, base)

    key_file = _text(_last(assigns, _KEY_FILE))
    address_assign = _last(assigns, _ADDRESS)
    address = (_text(address_assign) or "").strip()
    if address_assign is not None and any(c.isspace() for c in address):
        raise _error(
            address_assign.origin,
            f"{address_assign.key} {address!r} contains spaces",
            "set it to one name or IP address",
        )
    return Host(
        name=name,
        address=address or name,
        port=_port(_last(assigns, _PORT)),
        user=_text(_last(assigns, _USER)),
        key_file=_local_path(key_file, base) if key_file else None,
        password=_text(_last(assigns, _PASSWORD), secret=True),
        become=_bool(_last(assigns, _BECOME), False),
        become_user=_text(_last(assigns, _BECOME_USER)),
        connection=_connection(_last(assigns, _CONNECTION)),
        known_hosts=ssh.known_hosts,
        strict_host_key=ssh.strict or "yes",
        proxy_jump=None if (ssh.proxy_jump or "").lower() in ("", "none") else ssh.proxy_jump,
        groups=tuple(groups),
        vars=MappingProxyType(merged),
    )


def _group_order(groups: dict[str, _Group]) -> dict[str, tuple[int, int, str]]:
    """Ansible's group sort key: depth below `all` (longest path), then priority, then name."""
    depth: dict[str, int] = {"all": 0}

    def depth_of(name: str) -> int:
        if name not in depth:
            parents = groups[name].parents or ["all"]
            depth[name] = 1 + max(depth_of(p) for p in parents)
        return depth[name]

    return {name: (depth_of(name), g.priority, name) for name, g in groups.items()}


def load_inventory(path: str | Path) -> list[Host]:
    """Read an Ansible inventory plus its group_vars/ and host_vars/: a YAML one by the reader
    below, anything else (INI, a script, a plugin, vaulted values) through ansible-core when
    it is installed.

    Returns the hosts in the order they first appear in the file, each once. Raises InputError,
    with file, line and a hint, on anything we cannot connect to exactly as written.
    """
    try:
        return _load_yaml_inventory(Path(path))
    except NeedsAnsible:
        if not ansible_available():
            raise
        return load_with_ansible(path)


def _load_yaml_inventory(inventory: Path) -> list[Host]:
    if inventory.is_file() and os.access(inventory, os.X_OK) \
            and inventory.suffix not in (".yml", ".yaml", ".json"):
        raise NeedsAnsible("this is an executable: a dynamic inventory script, which "
                           "kubenetdiag runs through ansible-core only", file=str(inventory),
                           hint=ANSIBLE_HINT.replace("FILE", str(inventory)))
    doc = _load(inventory, inventory=True)
    if isinstance(doc.data, dict) and "plugin" in doc.data:
        raise NeedsAnsible(f"this is the configuration of the inventory plugin "
                           f"{doc.data['plugin']!r}, which kubenetdiag runs through "
                           "ansible-core only", file=doc.file, line=doc.line_of(("plugin",)),
                           hint=ANSIBLE_HINT.replace("FILE", doc.file))
    parser = _Parser(doc)
    parser.parse()
    if not parser.hosts:
        raise InputError(
            "the inventory lists no hosts",
            file=doc.file,
            hint="add nodes under a group's `hosts:`, e.g.\nall:\n  hosts:\n    node1:",
        )
    groups = parser.groups
    groups.setdefault("ungrouped", _Group("ungrouped"))
    # Absolute, so paths resolved against it stay right if a later stage changes directory.
    base = inventory.absolute().parent
    for name, group in groups.items():
        group.files = _load_vars_files(base / "group_vars", name)
    for name, entry in parser.hosts.items():
        entry.files = _load_vars_files(base / "host_vars", name)
    order = _group_order(groups)
    return [_build_host(entry, groups, order, base) for entry in parser.hosts.values()]


def local_host() -> Host:
    """This machine as the only node (`diagnose --local`): probes run without SSH."""
    return Host(name=socket.gethostname() or "localhost", address="localhost", connection="local")


# ---------------------------------------------------------------- read by Ansible
# Inventories only Ansible can read, read by Ansible: INI files, dynamic inventory scripts,
# inventory plugins (cloud, netbox: a YAML file with `plugin:`), and vaulted values. Needs
# ansible-core (`pip install 'kubenetdiag[ansible]'`); load_inventory comes here when the YAML
# reader above meets one of those (NeedsAnsible), and says how to get ansible-core when it is
# missing.
#
# Ansible's InventoryManager reads the source with the user's ansible.cfg (inventory plugins
# enabled, vault identities), its VariableManager merges group_vars/ and host_vars/ as a
# playbook would, and the vault password file Ansible is configured with
# (ANSIBLE_VAULT_PASSWORD_FILE, or ansible.cfg's vault_password_file) decrypts vaulted values;
# no password is ever asked for. Each host's variables then go through the same checks as the
# YAML reader's (kubenetdiag.inventory.host_from_vars).

ANSIBLE_HINT = "pip install 'kubenetdiag[ansible]' (ansible-core), or convert the inventory " \
               "once: ansible-inventory -i FILE --list -y > inventory.yml"
# Variables Ansible adds to every host itself, not from the inventory
_MAGIC = frozenset({
    "inventory_hostname", "inventory_hostname_short", "group_names", "groups", "omit",
    "inventory_dir", "inventory_file", "playbook_dir", "ansible_playbook_python",
    "ansible_config_file", "ansible_version", "ansible_check_mode", "ansible_diff_mode",
    "ansible_forks", "ansible_inventory_sources", "ansible_skip_tags", "ansible_run_tags",
    "ansible_verbosity", "ansible_facts",
})


def ansible_available() -> bool:
    return importlib.util.find_spec("ansible") is not None


def load_with_ansible(path: str | Path) -> list[Host]:
    """The inventory's hosts, as `ansible-inventory -i PATH --list` shows them."""
    from ansible import constants as C  # noqa: N812 (Ansible's own name for it)
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    source = Path(path)
    loader = DataLoader()
    try:
        _vault_secrets(loader, C)
        inventory = InventoryManager(loader=loader, sources=[str(source)])
        variables = VariableManager(loader=loader, inventory=inventory)
        hosts = inventory.get_hosts()
        if not hosts:
            raise InputError("Ansible read no hosts from the inventory", file=str(source),
                             hint="check it with: ansible-inventory -i FILE --list")
        out = []
        base = source.absolute().parent
        for host in hosts:
            found = variables.get_vars(host=host, include_hostvars=False)
            own = {k: v for k, v in found.items() if k not in _MAGIC}
            groups = [g.name for g in host.get_groups()]
            out.append(host_from_vars(host.name, _plain(own), groups, base, (str(source), None)))
        return out
    except AnsibleError as exc:
        raise InputError(f"Ansible could not read the inventory: {exc.message}",
                         file=str(source),
                         hint="check it with: ansible-inventory -i FILE --list") from None


def _vault_secrets(loader: Any, constants: Any) -> None:
    """The vault password file Ansible is configured with, if any; never a prompt. Ansible
    2.19 keeps vault secrets in a process-wide context that may be set up only once."""
    global _VAULT_SECRETS
    if _VAULT_SECRETS is None:
        from ansible.cli import CLI

        files = [constants.DEFAULT_VAULT_PASSWORD_FILE] \
            if constants.DEFAULT_VAULT_PASSWORD_FILE else []
        _VAULT_SECRETS = CLI.setup_vault_secrets(
            loader, vault_ids=constants.DEFAULT_VAULT_IDENTITY_LIST, vault_password_files=files,
            ask_vault_pass=False, auto_prompt=False)
    loader.set_vault_secrets(_VAULT_SECRETS)


_VAULT_SECRETS: list | None = None


def _plain(value: Any) -> Any:
    """Ansible's own string and mapping types (vaulted text, unsafe text) as plain Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)
