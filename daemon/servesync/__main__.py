"""``python -m servesync``: the same as the ``servesync`` console script."""

from __future__ import annotations

import sys

from servesync.cli import main

if __name__ == "__main__":
    sys.exit(main())
