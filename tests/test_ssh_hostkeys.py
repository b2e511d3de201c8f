"""known_hosts handling of the collector: lookups by plain and hashed names, and opt-in saving
that appends rather than rewrites the user's file."""

from __future__ import annotations

import paramiko
import pytest

from kubenetdiag.collect.hostkeys import AcceptNewPolicy as _AcceptNewPolicy
from kubenetdiag.collect.hostkeys import HostKeyStore
from kubenetdiag.errors import CollectError


def _keys(n: int) -> list[paramiko.PKey]:
    # paramiko can only generate RSA keys; the store does not care about the type
    return [paramiko.RSAKey.generate(1024) for _ in range(n)]


def test_plain_and_hashed_names_are_found_and_revoked_keys_are_not(tmp_path):
    a, b, c = _keys(3)
    hashed = paramiko.HostKeys.hash_host("10.0.0.2")
    path = tmp_path / "known_hosts"
    path.write_text(
        "# fleet keys\n"
        f"10.0.0.1,node1 {a.get_name()} {a.get_base64()}\n"
        f"{hashed} {b.get_name()} {b.get_base64()}\n"
        f"10.0.0.3 {c.get_name()} {c.get_base64()}\n"
        f"@revoked * {c.get_name()} {c.get_base64()}\n"
        f"@cert-authority *.example {b.get_name()} {b.get_base64()}\n"
        "this line is not a key\n"
    )
    store = HostKeyStore()
    assert store.lookup(str(path), "10.0.0.1") == {a.get_name(): a}
    assert store.lookup(str(path), "node1") == {a.get_name(): a}
    assert store.lookup(str(path), "10.0.0.2") == {b.get_name(): b}
    assert store.lookup(str(path), "10.0.0.3") == {}  # listed, but revoked for every host
    assert store.lookup(str(path), "x.example") == {}  # host certificates are not supported
    assert store.lookup(str(path), "10.0.0.9") == {}
    # not even --accept-new-host-keys takes a revoked key
    with pytest.raises(CollectError, match="@revoked"):
        _AcceptNewPolicy(store, str(path)).missing_host_key(None, "10.0.0.9", c)
    _AcceptNewPolicy(store, str(path)).missing_host_key(None, "10.0.0.9", a)
    assert store.lookup(str(path), "10.0.0.9") == {a.get_name(): a}


def test_accepted_keys_are_appended_once_and_the_users_lines_stay(tmp_path):
    a, b = _keys(2)
    path = tmp_path / "known_hosts"
    original = f"# do not edit by hand\n10.0.0.1 {a.get_name()} {a.get_base64()}"  # no newline
    path.write_text(original)
    store = HostKeyStore()
    assert store.lookup(str(path), "[10.0.0.2]:2222") == {}
    store.add(str(path), "[10.0.0.2]:2222", b)
    assert store.lookup(str(path), "[10.0.0.2]:2222") == {b.get_name(): b}
    assert store.save() == [str(path)]
    assert store.save() == []  # nothing new the second time
    text = path.read_text()
    assert text.startswith(original + "\n")
    assert text.endswith(f"[10.0.0.2]:2222 {b.get_name()} {b.get_base64()}\n")
    # what was written is read back by a fresh run, and by paramiko itself
    assert HostKeyStore().lookup(str(path), "[10.0.0.2]:2222") == {b.get_name(): b}
    assert paramiko.HostKeys(str(path)).lookup("[10.0.0.2]:2222") is not None


def test_a_missing_file_is_created_private(tmp_path):
    (a,) = _keys(1)
    path = tmp_path / "new" / "known_hosts"
    store = HostKeyStore()
    assert store.lookup(str(path), "10.0.0.1") == {}
    store.add(str(path), "10.0.0.1", a)
    store.save()
    assert path.read_text() == f"10.0.0.1 {a.get_name()} {a.get_base64()}\n"
    assert path.stat().st_mode & 0o777 == 0o600
