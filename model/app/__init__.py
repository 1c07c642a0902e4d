"""``fyp-app``: the web app for pose-guided generation (Gradio): its handlers (plain functions, no Gradio), the
per-session temporary files, the page, and the command line.

May import ``model.generation``, ``model.nets`` and ``pose_data``.
"""
