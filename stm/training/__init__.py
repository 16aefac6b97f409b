"""Stage 2 of STM: LoRA + InfoNCE training of decoder LLMs into retrieval experts."""
