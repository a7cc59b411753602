"""Metrics (FHR/HR/NDCG/coverage/invalid rate), baselines and the report."""
