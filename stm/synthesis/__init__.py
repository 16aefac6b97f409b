"""Stage 1 of STM: LLM generators (a registry), cached generation, and synthetic hard negatives."""
