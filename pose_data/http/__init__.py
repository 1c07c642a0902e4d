"""HTTP: fetching that reaches public addresses only, with bounded bodies and deadlines; a local server for the
offline demo.

Imports nothing else of the project.
"""
