"""``prodcat dashboard``: a web page for the people who own the catalogue.

It reads the topics as any downstream service does (products for titles and photos,
categories for assignments, categories.corrections for decisions), keeps a bounded window
of each in memory, scrapes the workers' /metrics for throughput, latency and dead letters,
and publishes reviewers' decisions to the corrections topic. docs/architecture.md has the
module map.
"""
