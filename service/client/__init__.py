"""The Python client for channel systems and analysts: decisions, events and reports over HTTP.

It needs only `requests`. Inside the server it is `service.client`; installed alone
(`pip install ./service/client`) it is `nextbest_client`:

    from nextbest_client import Client
    nb = Client("http://127.0.0.1:8000", key="nb_...")
    decision = nb.assign("spring-email", "c-123", context={"recency": 3}, channel="email",
                         default_payload={"template": "none"})
    if not decision.no_offer:
        nb.send_events([nb.event("click", assignment_id=decision.assignment_id)])
"""

from .client import RETRY_STATUSES, ApiError, Client, Unavailable, new_key
from .models import ArmMetric, ArmSummary, Decision, EventResults, Metric, Report

__all__ = ["RETRY_STATUSES", "ApiError", "ArmMetric", "ArmSummary", "Client", "Decision", "EventResults", "Metric",
           "Report", "Unavailable", "new_key"]
