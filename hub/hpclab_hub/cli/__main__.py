"""``python -m hpclab_hub.cli``: the same as ``hpclab-hub``."""

import sys

from hpclab_hub.cli import main

sys.exit(main())
