"""The dataset's partitioning and grouping, shared by its assets, checks and automation."""

import dagster as dg

prompt_tables = dg.DynamicPartitionsDefinition(name="prompt_tables")
"""One partition per prompt table (data/prompts/KEY.parquet)."""
GROUP = "flux_dataset"
FAL_POOL = "fal"
"""Dagster concurrency pool shared by every step that calls fal (limit it on the instance)."""
