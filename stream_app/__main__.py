"""``python -m prodcat``: the same command line as the ``prodcat`` script."""

from prodcat.cli.main import main

main()
