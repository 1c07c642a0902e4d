"""Building blocks of the Follow-Your-Pose data pipelines: plain functions and small classes, no Ray."""
