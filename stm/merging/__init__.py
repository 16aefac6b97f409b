"""Stage 3 of STM: merge expert models with MergeKit and search the merge weights on dev tasks."""
