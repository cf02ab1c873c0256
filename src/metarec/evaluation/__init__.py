"""Evaluation: pure metric functions, full-catalogue ranking, result rows, reports and plots."""
