"""Per-domain CTR serving on onnxruntime (torch-free)."""
