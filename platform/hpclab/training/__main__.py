"""``python -m hpclab.training [flags]``: one rank of a training run (what launchers start)."""

import sys

from .trainer import main

sys.exit(main())
