"""People in images: keypoints, the pose-estimator interface, its backends (MMPose, MediaPipe) and the factory that
builds one, and the person filter.

May import ``pose_data.files``, ``pose_data.media`` and the plumbing modules of ``pose_data``.
"""
