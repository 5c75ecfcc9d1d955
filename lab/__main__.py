"""``python -m lab``: the twin's command line."""

import sys

from lab.cli import main

sys.exit(main())
