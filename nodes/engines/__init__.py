"""Engines that replicas run: their launch commands, their load metrics, and the sim engine."""
