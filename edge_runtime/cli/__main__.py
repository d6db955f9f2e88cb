"""``python -m edge_runtime.cli``."""

import sys

from . import main

sys.exit(main())
