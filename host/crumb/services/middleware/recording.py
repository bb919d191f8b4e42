"""What both middlewares write to a service log (servicelog.py): one record per decision on a protected request."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ...errors import CrumbError
from ..grant import Grant
from ..servicelog import EVENT_ACCEPTED, EVENT_REFUSED, ServiceLog
from .guard import bearer_token

log = logging.getLogger("crumb.http")


def record_accepted(service_log: ServiceLog, grant: Grant) -> None:
    """Commit the acceptance; raises StoreUnavailable if it is not on disk (the caller refuses the request)."""
    service_log.log(token=grant.token, decision=EVENT_ACCEPTED, code=None, resource=grant.resource,
                    operation=grant.operation, hops=grant.attested)


def record_refused(service_log: ServiceLog, e: CrumbError, target: tuple[str, str] | None,
                   authorization: Sequence[str]) -> None:
    """Commit the refusal, if there is one to record; never raises (the request is refused either way)."""
    if target is None and not authorization:
        return  # a path no rule covers, sent without a token (a probe, a scan): no token was refused
    try:
        token: bytes | None = bearer_token(authorization)
    except CrumbError:
        token = None  # no token, or not one we could read: the record says so (token null)
    resource, operation = target if target is not None else (None, None)
    try:
        service_log.log(token=token, decision=EVENT_REFUSED, code=e.code, resource=resource,
                        operation=operation, message=e.message)
    except CrumbError as failed:
        # The request is refused either way; only its record is lost, and the log says why.
        log.error("the service log could not record a refusal (%s): %s", e.code, failed.message)
