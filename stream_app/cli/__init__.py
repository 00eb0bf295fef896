"""The ``prodcat`` command line: the lazy group, shared options, one module per command."""
