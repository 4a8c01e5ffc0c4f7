"""Data shipped inside the package (ml-latest-small, with its README and licence)."""
