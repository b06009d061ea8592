"""`python -m contextd`: the same entry point as the `contextd` command."""

import sys

from contextd.cli import main

sys.exit(main())
