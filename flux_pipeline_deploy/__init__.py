"""Deployment-specific patches to Dagster's own packages, kept out of the code location. Each
checks the version of the package it patches and refuses to load on one it was not written for."""
