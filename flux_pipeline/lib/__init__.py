"""Dagster helpers that define nothing: the partitions, automation conditions, the shared asset
and check decorators, metadata, spend per run, table versions, and the Dagster side of a
generation step. The definitions themselves are in `flux_pipeline/defs/`."""
