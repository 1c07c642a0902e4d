"""The commands: Ray pipelines that compose the ``pose_data`` building blocks (LAION-Pose, the HD-VILA index),
``extract-poses``, the offline demo, and the ``pose-data`` command line that wires them.

The top layer: may import ``pose_data`` and ``model``; nothing imports it.
"""
