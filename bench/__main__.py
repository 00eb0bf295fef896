"""``python -m bench``: the same command as ``prodcat bench``."""

import sys

from prodcat.cli.main import cli

if __name__ == "__main__":
    cli.main(["bench", *sys.argv[1:]], prog_name="python -m bench")
