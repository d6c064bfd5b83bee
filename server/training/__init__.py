"""Everything that needs torch: models, training, codebooks, the quantised forward pass, the
SIQ loop, export to a bundle and the pipeline that runs a job (docs/ARCHITECTURE.md)."""
