"""The evaluator's public face (for tools and other apps): the harness's bucketed scorer."""

from eval.harness_scoring import Scorer, length_buckets

__all__ = ["Scorer", "length_buckets"]
