"""The plugin contract: hooks, component classes, the plugin manager, the featurize pipeline."""
