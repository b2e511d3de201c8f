"""`python -m kubenetdiag.lab up|down|inject|heal|status`: drive the lab by hand.

Useful when writing rules: bring a lab up, inject a fault, point the diagnoser at
<workdir>/hosts.yaml from the client namespace (`ip netns exec <prefix>-client ...`), heal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kubenetdiag.lab.faults import FAULTS
from kubenetdiag.lab.lab import Lab
from kubenetdiag.lab.netns import LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubenetdiag.lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the lab")
    up.add_argument("--nodes", type=int, default=2)
    down = sub.add_parser("down", help="tear the lab down (also after a crashed run)")
    inject = sub.add_parser("inject", help="break a node")
    inject.add_argument("fault", choices=sorted(FAULTS))
    inject.add_argument("node")
    heal = sub.add_parser("heal", help="undo faults (all if none given)")
    heal.add_argument("fault", nargs="?", choices=sorted(FAULTS))
    heal.add_argument("node", nargs="?")
    status = sub.add_parser("status", help="print lab.json")
    for p in (up, down, inject, heal, status):
        p.add_argument("--workdir", type=Path, required=True)
    for p in (up, down):
        p.add_argument("--prefix", default="knd")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "up":
            lab = Lab(args.workdir, nodes=args.nodes, prefix=args.prefix)
            lab.up()
            print(f"lab up in {lab.timings['up_s']:.2f}s; inventory {lab.inventory_path}; "
                  f"client netns {lab.client_netns}")
        elif args.cmd == "down":
            # Without state, the prefix alone is enough to find and remove everything.
            try:
                lab = Lab.load(args.workdir)
            except LabError:
                lab = Lab(args.workdir, prefix=args.prefix)
            lab.down()
            print(f"lab {lab.prefix} down in {lab.timings['down_s']:.2f}s")
        elif args.cmd == "inject":
            Lab.load(args.workdir).inject(args.fault, args.node)
        elif args.cmd == "heal":
            Lab.load(args.workdir).heal(args.fault, args.node)
        else:
            print(json.dumps(json.loads(Lab.load(args.workdir).state_path.read_text()), indent=2))
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
