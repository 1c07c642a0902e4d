"""pose_data/extract_poses."""
