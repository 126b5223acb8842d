"""`python -m integration`: see integration.cli."""

import sys

from .cli import main

sys.exit(main())
