"""`python -m difflab` = the `difflab` command."""

import sys

from difflab.cli.main import main

sys.exit(main())
