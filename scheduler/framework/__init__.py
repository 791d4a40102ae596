"""Ports: the Protocols plugins implement and the immutable values they see.

Depends only on ``scheduler.types`` and ``scheduler.errors``; never on Ray, HTTP or engines.
"""
