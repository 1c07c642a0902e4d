"""``python -m model.cli``: ``fyp-train`` under its module name from before the layout moved it to
:mod:`model.training.cli`, so that launch lines such as ``accelerate launch -m model.cli stage1 ...`` keep working."""

import sys

from model.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
