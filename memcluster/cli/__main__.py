"""`python -m memcluster.cli`: the command line."""

import sys

from memcluster.cli import main

sys.exit(main())
