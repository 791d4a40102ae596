"""Kubernetes, purely: the API seam and its fake, Nodes read into inventory, and the decisions
that resize KubeRay worker groups. No module here imports the ``kubernetes`` client; the real
client and the loop that acts on these decisions live in ``scheduler.controlplane``.
"""
