"""Who may stream and how much (SPEC §4; docs/budgets.md): one module a job.

    admission = Admission(settings.admission)                   # once per app
    client = admission.keys.identify(authorization, x_api_key)  # or 401
    ticket = await admission.admit(client, peer)        # the cap, the client's limits: 503/429
    conversation = await ticket.reserve(model, conversation)    # a key's budget, or 429
    ticket.past_allowance(bytes, deltas)                # the failure that cuts it, or None
    await ticket.release(usage, bytes)                  # once, whatever happened

keys.py         client keys: who is asking
cap.py          the proxy's stream cap
counters.py     open streams per client, in memory or Redis
rate_limits.py  a client's request rate and its open streams
budgets/        a named key's token and spend budgets: the arithmetic, the stores
backend.py      the Redis pieces they share: connection, errors, bound, undos, warning
ticket.py       the one object a stream holds and releases
admission.py    `Admission`, built once per app
"""

from proxy.admission.admission import Admission
from proxy.admission.keys import ClientKeys, client_id
from proxy.admission.ticket import AdmissionTicket

__all__ = ["Admission", "AdmissionTicket", "ClientKeys", "client_id"]
