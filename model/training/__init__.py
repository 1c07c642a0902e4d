"""``fyp-train``: the training loop both stages share, stage 1 and stage 2 with their configs, checkpoints, the run
folder, and validation.

May import ``model.nets``, ``model.datasets``, ``model.generation`` (the validation samplers) and ``pose_data``.
"""
