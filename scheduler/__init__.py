"""Gearshift: a cost-aware scheduler for LLM inference on mixed GPU fleets.

The package is layered (see ``.importlinter``): ``types``/``errors`` at the bottom, the pure
``framework`` ports above them, the pure mechanisms (``routing``, ``placement``), and the edges
(``gateway``, ``controlplane``, ``cli``) on top. Built-in policies live in the sibling package
``policies`` and reach the framework only through the ``gearshift.policies`` entry point.
"""

__version__ = "0.1.0"
