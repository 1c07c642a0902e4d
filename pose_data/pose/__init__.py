"""pose_data/pose."""
