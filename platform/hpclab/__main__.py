"""Allow ``python -m hpclab``."""

from .cli import main

raise SystemExit(main())
