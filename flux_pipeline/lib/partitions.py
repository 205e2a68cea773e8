"""This project's own dataset's partitions (per dataset: lib/names.py), and the fal pool every
dataset shares."""

from .names import OWN

prompt_tables = OWN.prompt_tables
FAL_POOL = "fal"
"""Dagster concurrency pool shared by every step of every dataset that calls fal (one fal account:
limit it on the instance)."""
