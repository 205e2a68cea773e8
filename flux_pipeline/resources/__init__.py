"""The project's Dagster resources: fal (real or emulated) and the dataset."""

from .dataset import DatasetResource
from .fal import BaseFalResource, EmulatedFalResource, FalResource

__all__ = ["BaseFalResource", "DatasetResource", "EmulatedFalResource", "FalResource"]
