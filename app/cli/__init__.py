"""The ``pso`` command line: one module per command, shared helpers in ``common``. Imported by
nothing of PSO (the entry point only).
"""
