"""Canonical tables, loaders, the embedded default datasets, time splits and future-window labels."""
