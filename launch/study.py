"""`python -m launch.study`: the studies' command line, kept under its documented name
(`studies.cli` holds it)."""

import sys

from studies import cli

if __name__ == "__main__":
  sys.exit(cli.main())
