"""prodcat runtime: config, CLI, plugin contract, event codec, Faust worker, inference."""
