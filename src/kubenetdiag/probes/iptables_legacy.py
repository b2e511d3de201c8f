"""The legacy iptables backend, read only where it holds tables that the nf_tables
`iptables-save` cannot show.

Debian 10+/Ubuntu 20.04+/RHEL 8+ ship iptables-nft, yet an old kube-proxy, CNI or host agent
may still program the legacy backend; packets then cross both rule sets, and iptables-nft-save
only warns "iptables-legacy tables present". /proc/net/ip_tables_names lists the legacy tables
that exist. We never run iptables-legacy-save when it is empty: it would load ip_tables.
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.base import Probe, Section
from kubenetdiag.probes.iptables import parse_save

COMMAND = (
    "n=/proc/net/ip_tables_names; "
    "if [ ! -e $n ]; then echo '# no legacy tables'; exit 0; fi; "
    "if [ ! -r $n ]; then echo \"kubenetdiag: $n: Permission denied\" >&2; exit 1; fi; "
    "grep -q . $n || { echo '# no legacy tables'; exit 0; }; "
    "case \"$(iptables-save -V 2>/dev/null)\" in *nf_tables*|'') ;; "
    "*) echo '# iptables-save is the legacy backend: the iptables probe has these'; exit 0;; esac; "
    "command -v iptables-legacy-save >/dev/null 2>&1 || "
    "{ echo 'kubenetdiag: iptables-legacy-save: command not found' >&2; exit 127; }; "
    "iptables-legacy-save -c"
)


def parse(section: Section, node: str) -> list[Fact]:
    return parse_save(section, node, "iptables_legacy", COMMAND)


PROBE = Probe(
    name="iptables_legacy",
    command=COMMAND,
    parse=parse,
    blocks="legacy-backend iptables rules on a node whose iptables-save is nf_tables",
)
