"""The dataset's partitioning and grouping, shared by its assets, checks and automation (per
dataset: lib/names.py; these are this project's own dataset's)."""

from .names import GROUP, OWN

prompt_tables = OWN.prompt_tables
PROMPT_TABLES = OWN.partitions
FAL_POOL = "fal"
"""Dagster concurrency pool shared by every step of every dataset that calls fal (one fal account:
limit it on the instance)."""

__all__ = ["FAL_POOL", "GROUP", "PROMPT_TABLES", "prompt_tables"]
