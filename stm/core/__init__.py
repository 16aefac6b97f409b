"""The core every stage may use; it imports no stage.

* :mod:`~stm.core.retriever`: the one retriever object, a ``SentenceTransformer`` over a decoder (build, LoRA,
  features for training, encode, save/load, describe);
* :mod:`~stm.core.tasks`: every task declared once (embedded, the paper's MTEB tasks and dev sets, BEIR folders);
* :mod:`~stm.core.evaluation`: the mteb harness that training, merge search, prompts and baselines score with;
* :mod:`~stm.core.assets`, :mod:`~stm.core.beir`: offline models and data, BEIR folders (I/O);
* :mod:`~stm.core.generators`, :mod:`~stm.core.generation_cache`, :mod:`~stm.core.filters`: LLM generation
  with a per-row cache and named rejections, shared by the data, synthesis and prompt stages.

With ``stm.config``, ``stm.io``, ``stm.paths`` and ``stm.registry`` it forms the bottom layer; the stages sit on
it in one direction: data -> synthesis -> prompts -> training -> merging -> figures (``tests/test_structure.py``).
"""
