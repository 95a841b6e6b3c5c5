"""`python -m gateway`: the same entry point as the `gateway` console script."""

import sys

from gateway.daemon.cli import main

sys.exit(main())
