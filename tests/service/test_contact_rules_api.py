"""The customer's side through the real endpoints: consent, time zones, purchases, erasure, duplicates,
caps across channels, and the explanation of which rules were checked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import hashlib

import pytest
from sqlalchemy import text

from service import clock
from service.store import db as db_module
from tests.conftest import spring_email


def at(moment: datetime) -> None:
    """Move the service's clock so that now is `moment`."""
    clock.reset()
    clock.advance((moment - clock.utcnow()).total_seconds())


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    yield
    clock.reset()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def start(api: Any, key: str = "spring-email", **policy: Any) -> None:
    api.create_experiment(spring_email(key=key, contact_policy=policy or None), start=True)


@pytest.mark.parametrize("policy", [None, {"max_per_subject": {"count": 3, "per_seconds": 86400}}])
def test_a_channel_without_consent_gets_no_offer(api: Any, policy: Any) -> None:
    start(api, **(policy or {}))
    assert api.call("PUT", "/v1/subjects/c-1", scope="channel",
                    json={"consent": {"sms": False, "email": True}}).status_code == 200
    refused = api.assign("spring-email", "c-1", channel="sms")
    assert refused["no_offer"] is True and refused["reason"] == "no_consent" and refused["assignment_id"] is None
    assert api.assign("spring-email", "c-1", channel="email")["no_offer"] is False
    assert api.assign("spring-email", "c-2", channel="sms")["no_offer"] is False  # no profile: no refusal
    batch = api.assign_batch("spring-email", [{"subject_id": "c-1"}, {"subject_id": "c-2"}], channel="sms")
    assert [(b["no_offer"], b["reason"]) for b in batch] == [(True, "no_consent"), (False, None)]
    assert api.report("spring-email")["suppressed"]["no_consent"] == 2


def test_quiet_hours_read_the_request_zone_else_the_profile_zone_across_a_dst_change(api: Any) -> None:
    start(api, quiet_hours={"start": "21:00", "end": "08:00"})
    api.call("PUT", "/v1/subjects/ny", scope="channel", json={"timezone": "America/New_York"})
    # New York leaves daylight saving on 2026-11-01 at 02:00 local: 12:30 UTC is 08:30 EDT the day
    # before, but 07:30 EST on the day, inside the quiet hours.
    at(datetime(2026, 10, 31, 12, 30, tzinfo=timezone.utc))
    assert api.assign("spring-email", "ny")["no_offer"] is False
    at(datetime(2026, 11, 1, 12, 30, tzinfo=timezone.utc))
    quiet = api.assign("spring-email", "ny")
    assert quiet["reason"] == "quiet_hours" and quiet["retry_after"] == "2026-11-01T13:00:00Z"
    # The request's zone wins over the profile's: 21:30 in Tokyo.
    tokyo = api.assign("spring-email", "ny", context={"timezone": "Asia/Tokyo"})
    assert tokyo["reason"] == "quiet_hours" and tokyo["retry_after"] == "2026-11-01T23:00:00Z"
    assert api.assign("spring-email", "ny", context={"timezone": "Europe/London"})["no_offer"] is False
    # No zone anywhere: the global default (UTC), where 12:30 is daytime.
    assert api.assign("spring-email", "nobody")["no_offer"] is False
    batch = api.assign_batch("spring-email", [{"subject_id": "ny"}, {"subject_id": "nobody-2"}])
    assert [b["reason"] for b in batch] == ["quiet_hours", None]


def test_the_operators_default_zone_applies_when_neither_request_nor_profile_has_one(app: Any, api: Any) -> None:
    app.config["NEXTBEST_DEFAULT_TIMEZONE"] = "Asia/Tokyo"
    start(api, quiet_hours={"start": "21:00", "end": "08:00"})
    at(datetime(2026, 11, 1, 12, 30, tzinfo=timezone.utc))  # 21:30 in Tokyo
    assert api.assign("spring-email", "c-1")["reason"] == "quiet_hours"


def test_an_imported_purchase_and_an_unattributed_conversion_start_the_cooldown(api: Any) -> None:
    start(api, "a", cooldown_after_conversion_seconds=3 * 86400)
    start(api, "b", cooldown_after_conversion_seconds=86400)
    today = clock.utcnow().date().isoformat()
    imported = api.client.post("/v1/transactions/import", data=f"subject_id,date,amount\nbuyer,{today},30\n".encode(),
                               content_type="text/csv", headers=api.headers("analyst"))
    assert imported.status_code == 200, imported.get_json()
    for experiment in ("a", "b"):
        assert api.assign(experiment, "buyer")["reason"] == "cooldown_after_conversion"
    assert api.assign_batch("a", [{"subject_id": "buyer"}])[0]["reason"] == "cooldown_after_conversion"
    sent = api.send_events([{"event_id": "conv-x", "type": "conversion", "experiment": "a", "subject_id": "walk-in",
                             "value": 10.0, "occurred_at": iso(clock.utcnow())}])
    assert sent["accepted"] == 1  # stored as unattributed: the subject had no decision
    assert api.assign("b", "walk-in")["reason"] == "cooldown_after_conversion"
    assert api.assign("b", "someone-else")["no_offer"] is False


@pytest.mark.parametrize("policy", [None, {"max_per_subject": {"count": 3, "per_seconds": 86400}}])
def test_an_erased_unsubscriber_stays_suppressed_without_the_id_being_kept(app: Any, api: Any, policy: Any) -> None:
    start(api, **(policy or {}))
    api.send_events([{"event_id": "u-1", "type": "unsubscribe", "subject_id": "jane@example.com", "channel": "email",
                      "occurred_at": iso(clock.utcnow())}])
    erased = api.call("DELETE", "/v1/subjects/jane@example.com", scope="admin")
    assert erased.status_code == 200 and erased.get_json()["erased"]["do_not_contact_kept"] == 1
    assert api.assign("spring-email", "jane@example.com", channel="email")["reason"] == "unsubscribed"
    batch = api.assign_batch("spring-email", [{"subject_id": "jane@example.com"}], channel="email")
    assert batch[0]["reason"] == "unsubscribed"
    assert api.assign("spring-email", "jane@example.com", channel="sms")["no_offer"] is False
    unkeyed = hashlib.sha256(b"nextbest-erasure:jane@example.com").hexdigest()
    with db_module.get_db(app).engine.connect() as conn:
        kept = conn.execute(text("SELECT subject_hash FROM do_not_contact")).scalars().all()
        audit = conn.execute(text("SELECT details FROM audit_log WHERE action = 'erase_subject'")).scalars().all()
        left = conn.execute(text("SELECT count(*) FROM suppressions")).scalar()
    assert len(kept) == 1 and "jane" not in kept[0] and left == 0
    assert "jane" not in repr(audit) and unkeyed[:24] not in repr(audit)
    assert hashlib.sha256(b"subject:jane@example.com").hexdigest() not in kept  # keyed, not a plain hash


def test_a_subject_three_times_in_a_batch_is_decided_once(app: Any, api: Any) -> None:
    start(api, max_per_subject={"count": 5, "per_seconds": 86400})
    start(api, "no-policy")
    for experiment in ("spring-email", "no-policy"):
        answers = api.assign_batch(experiment, [{"subject_id": "dup"}, {"subject_id": "x"}, {"subject_id": "dup"},
                                                {"subject_id": "dup"}])
        assert [a["no_offer"] for a in answers] == [False, False, True, True]
        assert [a["reason"] for a in answers][2:] == ["duplicate_in_batch"] * 2
    with db_module.get_db(app).engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM assignments WHERE subject_id = 'dup'")).scalar() == 2


def test_a_cap_across_channels_stops_bombardment(api: Any) -> None:
    start(api, max_per_subject_all_channels={"count": 2, "per_seconds": 604800})
    assert api.assign("spring-email", "c-1", channel="email")["no_offer"] is False
    assert api.assign("spring-email", "c-1", channel="sms")["no_offer"] is False
    refused = api.assign("spring-email", "c-1", channel="push")
    assert refused["reason"] == "frequency_cap_all_channels" and refused["retry_after"]
    batch = api.assign_batch("spring-email", [{"subject_id": "c-1"}, {"subject_id": "c-2"}], channel="web")
    assert [b["reason"] for b in batch] == ["frequency_cap_all_channels", None]


def test_the_explanation_lists_every_contact_rule_checked_with_its_value(api: Any) -> None:
    start(api, max_per_subject={"count": 3, "per_seconds": 86400}, cooldown_after_conversion_seconds=3600,
          quiet_hours={"start": "21:00", "end": "08:00"}, max_per_subject_all_channels={"count": 5, "per_seconds": 604800})
    at(datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc))
    api.assign("spring-email", "c-1", channel="email")
    decision = api.assign("spring-email", "c-1", channel="email", context={"timezone": "Europe/Berlin"})
    why = api.call("GET", f"/v1/assignments/{decision['assignment_id']}").get_json()
    checks = {c["rule"]: c for c in why["contact_checks"]}
    assert set(checks) == {"unsubscribed", "consent", "cooldown_after_conversion", "frequency_cap",
                           "frequency_cap_all_channels", "quiet_hours"}
    assert checks["frequency_cap"]["value"] == 1 and checks["frequency_cap"]["passed"] is True
    assert checks["frequency_cap"]["limit"] == "3 per 86400 s on email"
    assert checks["quiet_hours"]["value"] == "13:00 in Europe/Berlin"
    assert checks["cooldown_after_conversion"]["value"] is None
    assert len(why["contact_rules"]) == 6 and "frequency_cap: 1 (limit 3 per 86400 s on email), passed" in why[
        "contact_rules"]
    start(api, "plain")
    plain = api.assign("plain", "c-9", channel="email")
    rules = api.call("GET", f"/v1/assignments/{plain['assignment_id']}").get_json()["contact_rules"]
    assert rules and all("passed" in r for r in rules)


def test_a_send_list_larger_than_the_fine_lock_limit_still_honours_the_cap(app: Any, api: Any) -> None:
    from service.store.contact_locks import FINE_LOCK_LIMIT

    start(api, max_per_subject={"count": 1, "per_seconds": 86400})
    subjects = [{"subject_id": f"c-{i}"} for i in range(FINE_LOCK_LIMIT + 100)]
    first = api.assign_batch("spring-email", subjects)
    assert not any(a["no_offer"] for a in first)
    again = api.assign_batch("spring-email", subjects[:50] + [{"subject_id": "new"}])
    assert [a["reason"] for a in again] == ["frequency_cap"] * 50 + [None]
    assert api.assign("spring-email", "c-3")["reason"] == "frequency_cap"
