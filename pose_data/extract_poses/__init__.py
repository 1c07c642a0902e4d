"""A driving video -> its poses frame by frame (``pose-data extract-poses``): the pose sequence and its
``keypoints.parquet``, the config, the per-video output folders.

May import ``pose_data.pose``, ``pose_data.skeleton``, ``pose_data.media``, ``pose_data.files`` and the plumbing.
"""
