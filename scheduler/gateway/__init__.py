"""The HTTP edge: the OpenAI-compatible endpoint and the admin API.

The only HTTP-aware code. Requests go auth → validate → classify → route → proxy; engines are
reached with plain HTTP (no Ray on the request path).
"""
