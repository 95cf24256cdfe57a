"""`python -m pai_client ...`, the same as the `pai` console script."""

from __future__ import annotations

import sys

from pai_client.cli import main

sys.exit(main())
