"""Training samples read from the data pipelines' WebDataset shards: the shard stream both trainers share (rank and
worker split, positions for exact resume), LAION-Pose image samples, HD-VILA clips, and their resize-and-crop.

May import ``pose_data``; nothing else of ``model``.
"""
