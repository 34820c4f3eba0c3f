"""`python -m difflab` = the `difflab` command."""

import sys

from difflab.cli import main

sys.exit(main())
