"""``python -m hardexec`` is the ``hardexec`` command."""

import sys

from .cli import main

sys.exit(main())
