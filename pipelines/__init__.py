"""Ray pipelines that compose the pose_data building blocks."""
