"""Domain errors of the EBS direct APIs, one class per error shape of botocore's `ebs` model;
`reason` is the model's Reason enum value the error carries, where it has one."""

from __future__ import annotations


class DirectError(Exception):
    """An error the EBS direct APIs would return; `code` names its error shape."""

    code = "InternalServerException"
    http_status = 500

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class ValidationException(DirectError):
    code = "ValidationException"
    http_status = 400

    def __init__(self, message: str, reason: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message, reason)


class ResourceNotFoundException(DirectError):
    code = "ResourceNotFoundException"
    http_status = 404

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")


class ConflictException(DirectError):
    code = "ConflictException"
    http_status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)


class AccessDeniedException(DirectError):
    code = "AccessDeniedException"
    http_status = 403

    def __init__(self, message: str, reason: str = "UNAUTHORIZED_ACCOUNT") -> None:
        super().__init__(message, reason)


class InternalServerException(DirectError):
    code = "InternalServerException"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)


class UnknownOperationException(DirectError):
    """A method and path of the service that no operation of its model serves."""

    code = "UnknownOperationException"
    http_status = 404

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"No EBS direct API operation is served at {method} {path}.")


class RequestThrottledException(DirectError):
    """Above the request rate of its action (`fakestor server --request-rate`): the account's
    rate, as the quotas of the EBS direct APIs are per account (ACCOUNT_THROTTLED)."""

    code = "RequestThrottledException"
    http_status = 400

    def __init__(self, action: str) -> None:
        # EBS documents no message for this error; this wording is fakestor's.
        super().__init__(
            f"The number of {action} requests has exceeded the request rate allowed for "
            "this account; retry with backoff.",
            "ACCOUNT_THROTTLED",
        )


class ServiceQuotaExceededException(DirectError):
    code = "ServiceQuotaExceededException"
    http_status = 402

    def __init__(self, message: str) -> None:
        super().__init__(message, "DEPENDENCY_SERVICE_QUOTA_EXCEEDED")
