"""Stage 1.2 of STM: retrieval-instruction optimization (GP-N pools, GEPA), as a registry of optimizers."""
