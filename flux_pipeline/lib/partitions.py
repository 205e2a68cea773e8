"""The dataset's partitioning and grouping, shared by its assets, checks and automation."""

import dagster as dg

PROMPT_TABLES = "prompt_tables"
prompt_tables = dg.DynamicPartitionsDefinition(name=PROMPT_TABLES)
"""One partition per prompt table (data/prompts/KEY.parquet)."""
GROUP = "flux_dataset"
FAL_POOL = "fal"
"""Dagster concurrency pool shared by every step that calls fal (limit it on the instance)."""
