"""pose_data/http."""
