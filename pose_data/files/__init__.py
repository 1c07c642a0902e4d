"""Files read and written safely: atomic writes, small JSON files, manifests, metadata tables, UTF-8 names.

Imports nothing else of the project.
"""
