"""`python -m relying_party`: the same as the `pushauth-rp` command."""

import sys

from .cli import main

sys.exit(main())
