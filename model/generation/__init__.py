"""Pose sequence + text -> video: the DDIM samplers, ``FollowYourPosePipeline``, the pose sources and the
``fyp-generate`` command line with the files it writes.

May import ``model.nets``, ``model.datasets`` and ``pose_data``.
"""
