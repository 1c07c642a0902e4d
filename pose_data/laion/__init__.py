"""pose_data/laion."""
