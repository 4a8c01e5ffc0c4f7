"""Domains, model versions and their audit trail (torch-free)."""
