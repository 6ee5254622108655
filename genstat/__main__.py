"""``python -m genstat`` is the same as the ``genstat`` command."""
import sys

from genstat.cli import main

sys.exit(main())
