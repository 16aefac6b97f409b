"""Evaluation: tasks (embedded, local BEIR, MTEB), encoders, and one ``evaluate`` backed by mteb."""
