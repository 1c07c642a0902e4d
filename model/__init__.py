"""The Follow Your Pose model: network pieces, the two trainers, generation and evaluation.

``nets`` (the networks and their weights) < ``datasets`` (training samples) < ``generation`` (samplers, the pipeline
object, ``fyp-generate``) < ``training`` (``fyp-train``) and ``evaluation`` (``fyp-eval``): a subpackage imports only
those before it, and ``pose_data``. Nothing here imports ``pipelines``.
"""
