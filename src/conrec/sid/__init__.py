"""Semantic IDs: item encoder, RQ-VAE / residual k-means, collision-free SID map, prefix trie."""
