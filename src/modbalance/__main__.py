"""``python -m modbalance`` runs the command line."""

import sys

from modbalance.cli import main

sys.exit(main())
