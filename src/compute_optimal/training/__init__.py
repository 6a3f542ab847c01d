"""Supervised fine-tuning of students on sampled data: regimes, SFT data, Lightning module, strategies."""
