"""``python -m functional_opt``: the ``functional-opt`` command-line tool."""

import sys

from functional_opt.cli import main

if __name__ == "__main__":
    sys.exit(main())
