"""Domain errors raised by services, mapped to HTTP in one place (genesis/api.py) and to exit codes
by the commands. Messages are written for the person who must act on them."""


class DomainError(Exception):
    """A request the domain refuses. `status_code` is the HTTP status the API answers with."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status_code = 404


class PermissionDenied(DomainError):
    status_code = 403


class InvalidInput(DomainError):
    status_code = 422


class Conflict(DomainError):
    """Refused by the current state: an illegal transition, an exhausted budget, an open hold."""

    status_code = 409
