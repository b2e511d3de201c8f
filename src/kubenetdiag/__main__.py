import sys

from kubenetdiag.entry import main

sys.exit(main())
