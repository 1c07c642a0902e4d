"""pose_data/media."""
