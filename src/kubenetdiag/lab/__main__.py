"""`python -m kubenetdiag.lab up|status|exec|inject|heal|down`: see kubenetdiag.lab.cli."""

from __future__ import annotations

import sys

from kubenetdiag.lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
