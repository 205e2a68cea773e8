"""The code location's definitions, one module per asset family (dg's defs folder, loaded by
`flux_pipeline.definitions`). No module here imports another: neighbours are named by key."""
