"""Entry point of ``python -m nodes.engines.sim``; see ``nodes.engines.sim.cli`` for the flags."""

import sys

from nodes.engines.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
