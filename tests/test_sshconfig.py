"""The OpenSSH client config applied to inventory hosts: it fills in what the inventory does
not say, and the inventory's values win, as with Ansible."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from kubenetdiag.collect.sshconfig import SshConfig
from kubenetdiag.errors import InputError
from kubenetdiag.inventory import Host

CONFIG = """\
Host edge-1
  HostName 192.0.2.11
  Port 2222
  User admin
  IdentityFile {key}
  UserKnownHostsFile ~/kh /etc/second
  StrictHostKeyChecking no
  ServerAliveInterval 15
  ProxyJump bastion
Host edge-2
  ProxyCommand nc -x proxy %h %p
Host *
  User fallback
"""


@pytest.fixture
def config(tmp_path) -> SshConfig:
    key = tmp_path / "id_edge"
    key.write_text("not parsed here")
    path = tmp_path / "config"
    path.write_text(CONFIG.replace("{key}", str(key)))
    return SshConfig.load(str(path))


def test_the_file_fills_in_what_the_inventory_leaves_out(config, tmp_path):
    route = config.route(Host("edge-1", "edge-1"))
    h = route.host
    assert (h.address, h.port, h.user, h.key_file) == (
        "192.0.2.11", 2222, "admin", str(tmp_path / "id_edge"))
    assert h.known_hosts.endswith("/kh") and h.proxy_jump == "bastion"
    assert h.strict_host_key == "accept-new"  # `no` never lets a changed key through
    assert route.keepalive_s == 15 and route.proxy_command is None
    other = config.route(Host("edge-2", "edge-2"))
    assert other.proxy_command == "nc -x proxy edge-2 22" and other.host.user == "fallback"


def test_the_inventorys_values_win(config):
    inv = Host("edge-1", "edge-1", port=2200, user="ops", key_file="/keys/ops",
               proxy_jump="jump.example", vars=MappingProxyType({"ansible_port": 2200}))
    h = config.route(inv).host
    assert (h.port, h.user, h.key_file, h.proxy_jump) == (2200, "ops", "/keys/ops",
                                                          "jump.example")
    assert h.address == "192.0.2.11"  # HostName still maps the name ssh is given


def test_no_file_changes_nothing_and_a_named_one_must_exist(tmp_path):
    host = Host("n1", "192.0.2.1")
    assert SshConfig.load(None, home=tmp_path).route(host).host == host
    with pytest.raises(InputError, match="no such SSH config file") as err:
        SshConfig.load(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(err.value)


def test_the_default_is_the_users_own_config(tmp_path):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host n1\n  User deploy\n")
    assert SshConfig.load(None, home=tmp_path).route(Host("n1", "n1")).host.user == "deploy"


def test_a_session_the_node_never_opens_is_a_node_error_with_its_reason():
    """Seen on 500 loaded lab nodes: sshd accepted the login but opened no session in time.
    The node's record says so in words (translated in the Chinese report), not as an
    unexpected error."""
    import paramiko

    from kubenetdiag.collect.ssh import _exec
    from kubenetdiag.errors import CollectError

    class Transport:
        def open_session(self, timeout):
            raise paramiko.SSHException("Timeout opening channel.")

    class Client:
        def get_transport(self):
            return Transport()

    with pytest.raises(CollectError, match="did not open a session within 15s") as err:
        _exec(Client(), "sh -s", "true", 15, 1024)
    assert "MaxSessions" in str(err.value)
