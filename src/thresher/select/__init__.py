"""Choosing examples: samplers, k-means, sensitivity sampling, named acquisition strategies,
latent dataset-distillation baselines."""

from thresher.select.kmeans import KMeansResult, kmeans, kmeans_pp, medoid_centers, nearest
from thresher.select.latent import (
    PrototypeOptimizer,
    class_means,
    distribution_matching,
    herding,
    kmeans_centroids,
    kmeans_medoids,
    mean_embedding_discrepancy,
    mean_intra_class_distance,
    prototype_losses,
    random_real,
)
from thresher.select.samplers import badge, kcenter_greedy, random_sample, systematic_pps, top_k
from thresher.select.sensitivity import SensitivitySample, estimate_lambda, sensitivity_sample
from thresher.select.strategies import STRATEGIES, Acquisition, Context, Oracle, register_strategy

__all__ = [
    "STRATEGIES", "Acquisition", "Context", "KMeansResult", "Oracle", "PrototypeOptimizer",
    "SensitivitySample", "badge", "class_means", "distribution_matching", "estimate_lambda",
    "herding", "kcenter_greedy", "kmeans", "kmeans_centroids", "kmeans_medoids", "kmeans_pp",
    "mean_embedding_discrepancy", "mean_intra_class_distance", "medoid_centers", "nearest",
    "prototype_losses", "random_real", "random_sample", "register_strategy",
    "sensitivity_sample", "systematic_pps", "top_k",
]
