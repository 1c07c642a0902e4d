"""pose_data/skeleton."""
