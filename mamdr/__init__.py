"""Shared, torch-free contracts of the MAMDR platform: settings, events, manifests, errors."""

__version__ = "0.1.0"
