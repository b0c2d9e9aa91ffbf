"""``python -m hiscale``: the command-line interface."""

import sys

from hiscale.cli import main

sys.exit(main())
