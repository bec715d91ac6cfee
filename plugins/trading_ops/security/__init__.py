"""The manual's security checks: one module per check family, findings with history and waivers, DAG wiring.

Nothing here imports a heavy library or reads a file at import time: the DAG files import `tasks`.
"""
