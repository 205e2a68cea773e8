"""flux_pipeline: synthetic image datasets from prompt tables through fal.ai FLUX1.1 [pro]."""

from .memory import return_large_buffers_to_the_system

__version__ = "0.1.0"

return_large_buffers_to_the_system()  # first, before anything imports pyarrow
