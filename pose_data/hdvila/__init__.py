"""pose_data/hdvila."""
