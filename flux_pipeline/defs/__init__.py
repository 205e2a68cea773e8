"""The code location's defs folder (dg's layout): one FluxDataset component (dataset/defs.yaml)."""
