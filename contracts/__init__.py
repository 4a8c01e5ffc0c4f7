"""The platform's contracts, at the bottom of every import: the click event, the model-version manifest and
its artifact format, settings, errors and their HTTP mapping, and the URL → backend resolver.

Torch-free and cheap to import; nothing here imports another package of the platform.
"""
