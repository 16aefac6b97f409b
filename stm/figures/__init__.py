"""Tables, claims and figures of the report: ours beside the paper's numbers.

* :mod:`~stm.figures.results`: tables of the run's records (:mod:`stm.core.records`: ``MainLine``, ``Ablations``);
* :mod:`~stm.figures.claims`: each paper claim as holds / does not hold / inconclusive, from a paired bootstrap;
* :mod:`~stm.figures.plots`: figures, named by content.
"""

from stm.figures.claims import ablation_claims, claims_table, main_line_claims, variant_map
from stm.figures.plots import (merge_weights, merged_vs_experts, pretraining_figure, prompt_pools_figure,
                               training_size_figure, variants_figure)
from stm.figures.results import baselines_table, main_table, paper

__all__ = ["ablation_claims", "baselines_table", "claims_table", "main_line_claims", "main_table", "merge_weights",
           "merged_vs_experts", "paper", "pretraining_figure", "prompt_pools_figure", "training_size_figure",
           "variant_map", "variants_figure"]
