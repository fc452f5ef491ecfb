"""The client key of a request that is not a stream (the model list, the usage, the resume
calls): 401 without a valid one, logged and observed as a stream's refusal is."""

from __future__ import annotations

from starlette.requests import Request

from proxy.errors import ProxyError
from proxy.record import StreamRecord
from proxy.requests import arrival_of, credentials, request_id_of
from proxy.services import Services, services_of


def identify_client(request: Request, services: Services) -> str | None:
    """The client's short id when keys are configured (401 without a valid one)."""
    return services.admission.keys.identify(*credentials(request))


async def authenticate(request: Request) -> str | None:
    """The client key, as a dependency; a refusal is logged and observed as a stream's is,
    with a record of its own, and answers with the request's id."""
    services = services_of(request)
    try:
        return identify_client(request, services)
    except ProxyError as exc:
        exc.request_id = request_id_of(request)
        record = StreamRecord(exc.request_id, request.url.path, arrival=arrival_of(request))
        record.refused(exc)
        record.finish()
        services.observers.stream_ended(record)
        raise
