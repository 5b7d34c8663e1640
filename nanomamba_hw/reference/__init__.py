"""Float reference model (PyTorch): the accuracy oracle every other engine is measured against."""

from .model import NanoMamba

__all__ = ["NanoMamba"]
