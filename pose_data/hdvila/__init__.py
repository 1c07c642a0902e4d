"""The HD-VILA clip index (``pose-data index-hdvila``): metadata, finding or fetching (yt-dlp) the videos, one shard
of clips decoded and written, and the config.

May import ``pose_data.media``, ``pose_data.http``, ``pose_data.files`` and the plumbing.
"""
