"""The floor for the fan-out benchmark: the least a paramiko program can do per node.

One thread per host connects, runs the probe script given on stdin with `sh -s`, and reads its
output; no host key store, no progress, no bundle, no parsing. `bench_fanout.py` runs it
beside `kubenetdiag collect`, so the collector's distance from this floor is measured, not
guessed.

    python bench/bare_paramiko.py INVENTORY < script
"""

from __future__ import annotations

import sys
import threading

import paramiko

from kubenetdiag.inventory import load_inventory


def main() -> int:
    hosts = load_inventory(sys.argv[1])
    # the lab gives every host the same user and key
    key = paramiko.Ed25519Key.from_private_key_file(hosts[0].key_file)
    script = sys.stdin.read()
    failed: list[str] = []

    def one(address: str) -> None:
        client = paramiko.SSHClient()
        # Lab hosts only: the lab's keys are fresh on every run, and this loop checks nothing.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(address, username=hosts[0].user, pkey=key, allow_agent=False,
                           look_for_keys=False, timeout=30)
            stdin, stdout, stderr = client.exec_command("sh -s")
            stdin.write(script)
            stdin.channel.shutdown_write()
            stdout.read()
            stderr.read()
            if stdout.channel.recv_exit_status() != 0:
                failed.append(address)
        except Exception:
            failed.append(address)
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(h.address,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(threads) - len(failed)} ok, failed: {' '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
