"""Building blocks of the data pipelines: plain functions and small classes that work without Ray.

Subpackages from the bottom up: ``files`` and ``http`` < ``media`` < ``pose`` < ``skeleton`` < ``extract_poses``,
``laion``, ``hdvila``; a subpackage imports only those below it, as its ``__init__`` says. The modules here are the
shared plumbing (config, flags, statuses, progress, locks, shard plans, previews, quiet terminals); they import only
``files`` and ``media``. Nothing here imports ``pipelines`` or ``model``.
"""
