"""Thresher: data-efficient deep learning — which examples a model learns from, how much each
counts, and what it must remember."""

__version__ = "0.1.0"
