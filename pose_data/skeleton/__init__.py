"""Keypoints -> skeleton images: the OpenPose (ControlNet annotator) and MMPose drawing styles.

May import ``pose_data.pose``.
"""
