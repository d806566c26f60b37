"""Per-example scores computed from one `predict` pass (arrays in, arrays out).

Convention: a higher score means "more informative / more uncertain", so every selector can
take the top of any score without knowing which one it is.
"""

from thresher.scoring.uncertainty import (
                                          SCORES,
                                          el2n,
                                          entropy,
                                          grad_norm,
                                          least_confidence,
                                          margin,
                                          score,
)

__all__ = ["SCORES", "el2n", "entropy", "grad_norm", "least_confidence", "margin", "score"]
