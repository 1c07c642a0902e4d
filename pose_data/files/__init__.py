"""pose_data/files."""
