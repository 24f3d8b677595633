"""Domain errors: one vocabulary from the service layer to the activities and the HTTP API."""


class DomainError(Exception):
    """A business rule refused the request; nothing was changed."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def type(self) -> str:
        """The error's name, carried as `ApplicationError.type` across Temporal."""
        return type(self).__name__


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Invalid(DomainError):
    status_code = 422


class Forbidden(DomainError):
    """The principal may not do this (to this object); nothing was changed."""

    status_code = 403


class TeamNotFound(NotFound): ...


class AgentNotFound(NotFound): ...


class CaseNotFound(NotFound): ...


class ApiKeyNotFound(NotFound): ...


class WebhookNotFound(NotFound): ...


class UnknownEventType(Invalid):
    """A filter or a webhook names an event type that does not exist."""


class UnknownTeam(Invalid):
    """A request names a team that does not exist (a field error, so 422)."""


class TeamExists(Conflict): ...


class EmailInUse(Conflict): ...


class DuplicateOpenCase(Conflict):
    """The order line already has an open case."""

    def __init__(self, message: str, existing_case_id: str) -> None:
        super().__init__(message)
        self.existing_case_id = existing_case_id


class IdempotencyKeyReused(Conflict): ...


class CaseNotAssigned(Conflict): ...


class WrongAgent(Forbidden):
    """Someone other than the case's assignee tried to resolve it."""


class CaseClosed(Conflict): ...


class NotAnOffer(Conflict):
    """Accept or decline of a case that is not (or no longer) offered to this agent."""


class CannotTransfer(Conflict):
    """A transfer the case's state does not allow (closed, or already in that team)."""


class CannotReopen(Conflict):
    """A reopen of a case that is not resolved, or was resolved longer ago than the reopen window."""


ERRORS_BY_TYPE: dict[str, type[DomainError]] = {
    cls.__name__: cls
    for cls in (
        TeamNotFound,
        AgentNotFound,
        CaseNotFound,
        ApiKeyNotFound,
        UnknownTeam,
        TeamExists,
        EmailInUse,
        DuplicateOpenCase,
        IdempotencyKeyReused,
        CaseNotAssigned,
        WrongAgent,
        CaseClosed,
        NotAnOffer,
        CannotTransfer,
        CannotReopen,
    )
}


class ConcurrentChange(Exception):
    """Rows moved between a read and the lock that followed it; the whole transaction is retried."""
