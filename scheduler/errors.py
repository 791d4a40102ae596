"""The one domain exception tree. HTTP status codes live only in ``scheduler.gateway.http_errors``.

::

    GearshiftError
    ├── ConfigError                 a config file or plugin spec is invalid
    ├── CatalogError                an unknown accelerator or model name
    ├── RequestError                something about one client request
    │   ├── InvalidRequest          bad JSON, a bad field (carries ``param``); never retried
    │   │   └── RequestTooLarge     the body is over the configured limit
    │   ├── ModelNotFound           the model is not served here
    │   ├── Unauthenticated         no API key, or not a live one
    │   ├── PermissionDenied        the key may not do this (no class it may use at or below)
    │   ├── RateLimited             the key is over its RPM/TPM (carries ``retry_after_s``)
    │   └── NoCapacity              nothing can take the request now (carries ``retry_after_s``)
    ├── UpstreamError               an engine failed or answered garbage
    ├── ControlPlaneError           Ray or the controller could not be reached or refused
    └── GpuProbeUnavailable         (nodes.discovery.gpu) no NVIDIA driver or GPU to probe
"""

from __future__ import annotations


class GearshiftError(Exception):
    """Base of every error Gearshift raises on purpose."""


class ConfigError(GearshiftError):
    """A config file, plugin spec or plugin reference is invalid."""


class CatalogError(GearshiftError):
    """An accelerator or model name is not in the catalog."""


class RequestError(GearshiftError):
    """Something about one client request; the gateway renders it as an OpenAI error."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(RequestError):
    """The request body is malformed or a field is out of range. Retrying will not help."""


class RequestTooLarge(InvalidRequest):
    """The request body exceeds the gateway's size limit."""


class ObjectNotFound(RequestError):
    """No file or batch with this id belongs to the caller (another tenant's is the same 404)."""

    def __init__(self, kind: str, object_id: str, *, param: str | None = None) -> None:
        super().__init__(f"No such {kind}: `{object_id[:100]}`.", param=param, code="not_found")
        self.kind = kind
        self.object_id = object_id


class ModelNotFound(RequestError):
    """The requested model is not served by this deployment."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
        self.model = model


class Unauthenticated(RequestError):
    """The request carries no API key, a malformed one, or one that is unknown or revoked."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")


class PermissionDenied(RequestError):
    """The key is valid but may not do what the request asks."""


class RateLimited(RequestError):
    """The key is over its requests or tokens per minute; retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, code="rate_limit_exceeded")
        self.retry_after_s = retry_after_s


class NoCapacity(RequestError):
    """No replica can take the request now; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float, code: str = "no_capacity") -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class UpstreamError(GearshiftError):
    """An engine failed, timed out or returned something that is not a valid response."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ControlPlaneError(GearshiftError):
    """The control plane (Ray, the controller, the admin API) is unreachable or refused."""
