"""`python -m finsent ...`, the same as the `finsent` command (and what torchrun needs: -m finsent)."""

import sys

from finsent.cli import main

sys.exit(main())
