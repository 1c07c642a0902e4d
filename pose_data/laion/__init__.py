"""LAION-Pose (``pose-data build-laion-pose``): guarded img2dataset downloading, the pose batch an actor runs, one
output shard assembled, and the config.

May import ``pose_data.pose``, ``pose_data.skeleton``, ``pose_data.media``, ``pose_data.http``, ``pose_data.files``
and the plumbing.
"""
