"""sedtune domain: score sets, ground truth, the post-processing stack, metrics, search space.

Nothing here imports Ray, Tune, RLlib, MLflow or web frameworks.
"""
