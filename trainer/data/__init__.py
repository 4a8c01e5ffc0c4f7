"""Benchmark data sets: MovieLens, Amazon 5-core, the paper's preprocessed folders, synthetic."""
