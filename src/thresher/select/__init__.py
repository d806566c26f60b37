"""Choosing examples: samplers, k-means, sensitivity sampling, named acquisition strategies."""

from thresher.select.kmeans import KMeansResult, kmeans, kmeans_pp, medoid_centers, nearest
from thresher.select.samplers import badge, kcenter_greedy, random_sample, systematic_pps, top_k
from thresher.select.sensitivity import SensitivitySample, estimate_lambda, sensitivity_sample
from thresher.select.strategies import STRATEGIES, Acquisition, Context, Oracle, register_strategy

__all__ = [
    "STRATEGIES", "Acquisition", "Context", "KMeansResult", "Oracle", "SensitivitySample",
    "badge", "estimate_lambda", "kcenter_greedy", "kmeans", "kmeans_pp", "medoid_centers",
    "nearest", "random_sample", "register_strategy", "sensitivity_sample", "systematic_pps",
    "top_k",
]
