"""The streaming worker: Faust app, dispatcher, classifier, micro-batcher, health and metrics."""
