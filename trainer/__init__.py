"""Everything that needs torch: models, learning frameworks, data, evaluation, streaming trainer, export."""
