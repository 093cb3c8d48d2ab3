"""``python -m hpclab.kernel_launcher NAME -f CONN`` (the same as ``hpclab-kernel``)."""

import sys

from .launcher import main

sys.exit(main())
