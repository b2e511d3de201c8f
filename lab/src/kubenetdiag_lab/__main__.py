"""`python -m kubenetdiag_lab up|status|exec|inject|heal|down`: see kubenetdiag_lab.cli."""

from __future__ import annotations

import sys

from kubenetdiag_lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
