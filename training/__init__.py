"""Training: data sets, fusion model built from plugins, export to model bundles, evaluation."""
