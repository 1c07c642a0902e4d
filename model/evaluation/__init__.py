"""``fyp-eval``: CLIP score, frame consistency and pose accuracy of generated videos, their inputs, and the
command line.

May import ``model.nets``, ``model.datasets``, ``model.generation`` (its sidecars and pose sources) and ``pose_data``.
"""
