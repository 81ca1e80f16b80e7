"""`python -m device_agent`: the same as the `pushauth-agent` command."""

import sys

from .cli import main

sys.exit(main())
