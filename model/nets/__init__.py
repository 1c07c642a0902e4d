"""The networks: pose encoder, pose-guided and inflated video UNet with its cross-frame and temporal layers, the
saved forms of their weights (video layers, the official release), the frozen SD 1.x base, the tiny test models.

May import ``pose_data.files``; nothing else of the project.
"""
