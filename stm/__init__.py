"""STM: Synthesize-Train-Merge biomedical retrievers from small decoder LLMs.

Reproduces arXiv 2602.04731 ("Less Finetuning, Better Retrieval: Rethinking LLM Adaptation for
Biomedical Retrievers via Synthetic Data and Model Merging"). A core (``stm.core`` with ``config``, ``io``,
``paths``, ``registry``) and one subpackage per stage, in one direction: data -> synthesis -> prompts ->
training -> merging -> figures. A stage function takes a typed config and input paths and writes its
outputs; only the CLI (``python -m stm``) and the notebooks read ``params.yaml``.
"""

__version__ = "0.1.0"
