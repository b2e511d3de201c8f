"""Inventories read through Ansible's own inventory API (ansible-core, the `ansible` extra):
INI files, dynamic scripts, plugins and vaulted values; and on every YAML fixture, the same
hosts and variables as kubenetdiag's own reader gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetdiag import inventory
from kubenetdiag.errors import InputError

pytest.importorskip("ansible", reason="ansible-core is the `ansible` extra")

FIXTURES = Path(__file__).parent / "fixtures" / "inventory"
YAML_FIXTURES = sorted([*FIXTURES.glob("*.yml"), *FIXTURES.glob("*/inventory.yml")])
KEYS = ("address", "port", "user", "key_file", "become", "become_user", "connection",
        "known_hosts", "strict_host_key", "proxy_jump")
# Ansible takes it as the group's rank, not as a variable of its hosts
NOT_A_VARIABLE = {"ansible_group_priority"}


def _view(hosts: list[inventory.Host]) -> dict[str, dict]:
    return {h.name: {**{k: getattr(h, k) for k in KEYS}, "groups": sorted(h.groups),
                     # YAML dates are dates to one reader and text to the other
                     "vars": {k: str(v) for k, v in h.vars.items() if k not in NOT_A_VARIABLE}}
            for h in hosts}


@pytest.mark.parametrize("path", YAML_FIXTURES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_both_readers_agree_on_every_yaml_fixture(path):
    ours = inventory.load_inventory(path)
    theirs = inventory.load_with_ansible(path)
    assert ours and _view(theirs) == _view(ours)


def test_an_ini_inventory_is_read_as_its_yaml_twin(tmp_path):
    ini = tmp_path / "hosts.ini"
    ini.write_text("[workers]\nnode1 ansible_host=192.0.2.11 ansible_port=2222\n"
                   "node2 ansible_host=192.0.2.12\n\n[workers:vars]\nansible_user=ops\n"
                   "kubenetdiag_endpoints=['db:5432']\n")
    yml = tmp_path / "hosts.yml"
    yml.write_text("all:\n  children:\n    workers:\n      hosts:\n"
                   "        node1: {ansible_host: 192.0.2.11, ansible_port: 2222}\n"
                   "        node2: {ansible_host: 192.0.2.12}\n"
                   "      vars: {ansible_user: ops, kubenetdiag_endpoints: ['db:5432']}\n")
    got = {h.name: (h.address, h.port, h.user, h.vars["kubenetdiag_endpoints"])
           for h in inventory.load_inventory(ini)}
    assert got == {h.name: (h.address, h.port, h.user, h.vars["kubenetdiag_endpoints"])
                   for h in inventory.load_inventory(yml)}
    assert got["node1"] == ("192.0.2.11", 2222, "ops", ["db:5432"])


def test_a_dynamic_inventory_script_is_run_by_ansible(tmp_path):
    script = tmp_path / "inventory"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps({
        "workers": {"hosts": ["node1"], "vars": {"ansible_user": "ops"}},
        "_meta": {"hostvars": {"node1": {"ansible_host": "192.0.2.11"}}}}) + "\nEOF\n")
    script.chmod(0o755)
    (host,) = inventory.load_inventory(script)
    assert (host.name, host.address, host.user) == ("node1", "192.0.2.11", "ops")


def test_a_vaulted_value_is_opened_with_the_configured_password_file(tmp_path):
    from ansible.parsing.vault import VaultLib, VaultSecret

    secret = tmp_path / "vault-pass"
    secret.write_text("correct horse\n")
    sealed = VaultLib([("default", VaultSecret(b"correct horse"))]).encrypt("s3cret").decode()
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    node1:\n      ansible_host: 192.0.2.11\n"
                   "      ansible_password: !vault |\n"
                   + "".join(f"        {line}\n" for line in sealed.splitlines()))
    # Ansible reads its configuration when imported: a process of its own, as a user's run
    code = ("from kubenetdiag.inventory import load_inventory; import sys; "
            "h, = load_inventory(sys.argv[1]); print(h.password)")
    env = {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": str(secret)}
    out = subprocess.run([sys.executable, "-c", code, str(inv)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.stdout.strip() == "s3cret", out.stderr


def test_without_ansible_core_the_error_says_how_to_read_it(tmp_path, monkeypatch):
    ini = tmp_path / "hosts.ini"
    ini.write_text("[workers]\nnode1 ansible_host=192.0.2.11\n")
    monkeypatch.setattr(inventory, "ansible_available", lambda: False)
    with pytest.raises(InputError) as err:
        inventory.load_inventory(ini)
    assert err.value.file == str(ini) and err.value.line == 1
    assert "kubenetdiag[ansible]" in err.value.hint
