"""One module per `prodcat` sub-command; each exposes a click command named `command`."""
