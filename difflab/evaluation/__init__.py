"""Evaluation: metrics, feature nets, reference statistics, likelihood, plots."""
