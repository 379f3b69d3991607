"""``python -m dreamlake``: the ``dreamlake`` command."""

import sys

from ._cli import main

sys.exit(main())
