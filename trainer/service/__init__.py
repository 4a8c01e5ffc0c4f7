"""The continual trainer: stream → buffers → MAMDR rounds → published versions → committed offsets."""
