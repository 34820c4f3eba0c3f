"""`python -m difflab` = the `difflab` command."""

import sys

try:
    from difflab.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules load: one line, no traceback
    print("difflab: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
