"""Images and videos: decoding (PIL, PyAV), frame sampling and limits, writing mp4/GIF videos and training clips.

May import ``pose_data.files``.
"""
