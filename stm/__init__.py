"""STM: Synthesize-Train-Merge biomedical retrievers from small decoder LLMs.

Reproduces arXiv 2602.04731 ("Less Finetuning, Better Retrieval: Rethinking LLM Adaptation for
Biomedical Retrievers via Synthetic Data and Model Merging"). One subpackage per stage; each stage
exposes a plain ``run(config)`` function called by the notebooks, the CLI and the tests alike.
"""

__version__ = "0.1.0"
