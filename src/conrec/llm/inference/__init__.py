"""Using a trained LM: prompt layouts, constrained and exhaustive search, scoring, prediction."""
