"""The console scripts' entry points (and `python -m kubenetdiag`'s).

Loading the CLI imports the engine, the kubernetes client and the renderers: seconds on a
loaded machine, which is when an SRE presses Ctrl-C. Imported here inside a guard, so that
Ctrl-C ends the run as it does later on (a line and exit 130), not with a traceback through
the import machinery. Only the exit codes are imported before it (kubenetdiag.errors needs
nothing but `re`).
"""

from __future__ import annotations

import os
from types import ModuleType

from kubenetdiag.errors import EXIT_INTERRUPTED


def _cli() -> ModuleType:
    try:
        from kubenetdiag import cli
    except KeyboardInterrupt:
        os.write(2, b"kubenetdiag: interrupted\n")
        os._exit(EXIT_INTERRUPTED)
    return cli


def main() -> int:
    return _cli().main()


def diagnose_main() -> int:
    return _cli().diagnose_main()


def kubectl_main() -> int:
    return _cli().kubectl_main()
