"""Executors: the only part of the keeper that touches keys and sends.

Which executor runs (live or dry-run) is chosen once, in app.build_executor.
"""
