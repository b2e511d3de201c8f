import sys

from kubenetdiag.cli import main

sys.exit(main())
