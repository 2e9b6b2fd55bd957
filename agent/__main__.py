"""``python -m agent`` is the same as the ``heartwire`` command."""

import sys

from agent.cli.main import main

sys.exit(main())
