"""flux_pipeline: synthetic image datasets from prompt tables through fal.ai FLUX1.1 [pro]."""

__version__ = "0.1.0"
