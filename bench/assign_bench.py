"""Decisions per second: POST /v1/assign under load, next to a bare Flask endpoint on the same server.

Rows: a fixed split; Thompson sampling; LinUCB with 10 arms and 10 numeric
features (both bandits trained first: a month-old log of 3,000 decisions is
imported and refitted, so they decide from a learned snapshot as in production);
a fixed split with a contact policy; LinUCB with features read from the subject
profile. Every row runs the same client layout (the one that gave
the bare endpoint its highest rate, chosen first) against gunicorn with the
same settings, so the ratio to the bare endpoint is what nextbest's decision
path costs. A second reference row, the bare endpoint plus one stored row
(bench/bare_app.py), is the floor for any endpoint that stores a decision before
it answers. Then one POST /v1/assign/batch of 100,000 subjects on the fixed split.

Run: .venv/bin/python bench/assign_bench.py [--seconds 4] [--batch-size 100000] [--skip-calibration]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    Api,
    Bench,
    LoadResult,
    calibrate,
    nextbest,
    fmt_int,
    fmt_ms,
    fmt_ratio,
    fmt_s,
    load,
    log,
    machine_note,
    print_table,
    verdict,
)

ARMS3 = [{"key": "control", "is_control": True, "payload": {"template": "none"}},
         {"key": "mens", "payload": {"template": "mens-v1"}},
         {"key": "womens", "payload": {"template": "womens-v1"}}]
FEATURES = [f"f{i}" for i in range(10)]


def fixed_spec(key: str, contact_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "key": key, "name": f"bench {key}", "arms": ARMS3,
        "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}},
        "reward": {"event": "conversion"},
    }
    if contact_policy is not None:
        spec["contact_policy"] = contact_policy
    return spec


def ts_spec(key: str) -> dict[str, Any]:
    return {"key": key, "name": f"bench {key}", "arms": ARMS3,
            "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1},
            "reward": {"event": "conversion"}}


def linucb_spec(key: str, source: str = "context") -> dict[str, Any]:
    arms = [{"key": "control" if i == 0 else f"offer-{i}", "is_control": i == 0, "payload": {"offer": i}}
            for i in range(10)]
    return {"key": key, "name": f"bench {key}", "arms": arms,
            "allocation": {"type": "bandit", "policy": {"name": "lin_ucb", "alpha": 1.0},
                           "features": [{"name": f, "type": "numeric", "source": source} for f in FEATURES]},
            "reward": {"event": "conversion"}}


def contexts(n: int, seed: int = 7) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{f: round(rng.uniform(0, 10), 3) for f in FEATURES} for _ in range(n)]


def body(experiment: str, context: dict[str, Any] | None = None, subject: str = "@ID@") -> bytes:
    doc: dict[str, Any] = {"experiment": experiment, "subject_id": subject, "channel": "email"}
    if context is not None:
        doc["context"] = context
    return json.dumps(doc).encode()


def contact_policy_now() -> dict[str, Any]:
    """Every rule present, none refusing a new subject: quiet hours placed away from the current UTC hour."""
    now = datetime.now(timezone.utc)
    start, end = now + timedelta(hours=6), now + timedelta(hours=7)
    return {"max_per_subject": {"count": 3, "per_seconds": 604800},
            "cooldown_after_conversion_seconds": 259200,
            "quiet_hours": {"start": f"{start:%H}:00", "end": f"{end:%H}:00"}}


def probe_contact_policy(api: Api) -> str | None:
    """None when the service enforces a contact policy, else why not."""
    try:
        api.create_experiment(fixed_spec("probe-contact", {"max_per_subject": {"count": 1, "per_seconds": 3600}}))
    except RuntimeError as exc:
        return f"a spec with a contact_policy is refused ({str(exc)[:200]})"
    first = api.assign("probe-contact", "probe-subject", expect=None)
    second = api.assign("probe-contact", "probe-subject", expect=None)
    if first.status_code != 200 or second.status_code != 200:
        return f"assign failed ({first.status_code}/{second.status_code}: {second.text[:200]})"
    if not second.json().get("no_offer"):
        return ("the spec is accepted but not enforced: a second decision for one subject under a cap of 1 per hour "
                "was not suppressed")
    return None


def probe_profile_features(api: Api) -> str | None:
    """None when a feature with source 'profile' is read from a stored profile, else why not."""
    put = api.call("PUT", "/v1/subjects/probe-subject", scope="channel", expect=None,
                   json={"attributes": {f: 1.0 for f in FEATURES}})
    if put.status_code not in (200, 201):
        return f"PUT /v1/subjects/{{id}} answers {put.status_code} (no subject profiles)"
    try:
        api.create_experiment(linucb_spec("probe-profile", source="profile"))
    except RuntimeError as exc:
        return f"a spec with profile-sourced features is refused ({str(exc)[:200]})"
    decided = api.assign("probe-profile", "probe-subject", expect=None)
    if decided.status_code != 200:
        return f"assign with profile-sourced features fails ({decided.status_code}: {decided.text[:200]})"
    return None


def store_profiles(api: Api, subjects: list[str], ctxs: list[dict[str, float]]) -> None:
    for subject, ctx in zip(subjects, ctxs):
        api.call("PUT", f"/v1/subjects/{subject}", scope="channel", json={"attributes": ctx}, expect=None)


def train(api: Api, db: Any, spec: dict[str, Any], ctxs: list[dict[str, float]] | None, rows: int = 3000) -> int:
    """Give a bandit a learned state, as a running one would have: import a month-old decision log
    (windows closed, so every decision is a training example), refit, and wait until the service
    decides from the new snapshot. Returns the policy version it serves."""
    rng = random.Random(5)
    arms = [a["key"] for a in spec["arms"]]
    decided = (datetime.now(timezone.utc) - timedelta(days=30)).isoformat()
    lines = []
    for i in range(rows):
        arm = arms[i % len(arms)]
        line: dict[str, Any] = {"subject_id": f"history-{spec['key']}-{i}", "arm": arm, "decided_at": decided,
                                "propensity": 1 / len(arms), "conversion": int(rng.random() < 0.05 + 0.02 * (i % 3))}
        if ctxs:
            line["context"] = ctxs[i % len(ctxs)]
        lines.append(json.dumps(line))
    api.http.post(api.url(f"/v1/experiments/{spec['key']}/import"), data="\n".join(lines).encode(), timeout=600,
                  headers={**api.headers("analyst"), "Content-Type": "application/x-ndjson"}).raise_for_status()
    nextbest(["refit", "--experiment", spec["key"]], db)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        version = api.assign(spec["key"], "probe-trained", context=ctxs[0] if ctxs else None).json()["policy_version"]
        if version:
            return int(version)
        time.sleep(0.5)
    raise RuntimeError(f"{spec['key']}: the service did not pick up the trained policy within 30 s")


def probe_assign(api: Api, experiment: str, context: dict[str, Any] | None) -> str | None:
    response = api.assign(experiment, "probe-subject", context=context, expect=None)
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:300]}"
    return None


def run(args: argparse.Namespace) -> None:
    measured: dict[str, LoadResult] = {}
    versions: dict[str, int] = {}
    skipped: dict[str, str] = {}
    warnings: list[str] = []
    with Bench("assign") as bench:
        db = bench.database()
        api = bench.service(db)
        bare = bench.bare(db)
        log(f"service on :{api.server.port}, bare Flask on :{bare.port}, database {db.name}")

        if args.skip_calibration:
            kind, layout = "http.client", (1, 8)
            cal_rows: list[list[str]] = []
        else:
            log("choosing the client layout (highest bare rate)")
            (kind, layout), cal_rows = calibrate(bare, seconds=args.calibration_seconds)

        def measure(name: str, url: str, bodies: list[bytes], headers: dict[str, str] | None = None) -> LoadResult:
            result = load(url, bodies, layout=layout, seconds=args.seconds, warmup=1.0, headers=headers,
                          kind=kind, label=name, run_tag=f"{len(measured)}x")
            log(f"  {name}: {result.rate:,.0f}/s p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms"
                f" errors {result.errors}" + (f" first: {result.first_error}" if result.first_error else ""))
            if result.sample and b'"no_offer":true' in result.sample.replace(b" ", b""):
                warnings.append(f"{name}: answers were no-offer decisions (e.g. {result.sample[:200]!r})")
            return result

        channel = api.headers("channel")
        bare_body = [body("fixed-split")]
        measured["bare"] = measure("bare Flask (before)", bare.url("/bare"), bare_body)
        measured["floor"] = measure("bare Flask + one stored row", bare.url("/bare/insert"), bare_body)

        api.create_experiment(fixed_spec("fixed-split"))
        measured["fixed"] = measure("fixed split", api.url("/v1/assign"), [body("fixed-split")], channel)

        ctx_pool = contexts(500)
        bandit_rows = [("ts", "Thompson sampling (3 arms)", ts_spec("thompson"), None),
                       ("linucb", "LinUCB (10 arms, 10 numeric features)", linucb_spec("linucb"), ctx_pool)]
        for name, label, spec, ctxs in bandit_rows:
            try:
                api.create_experiment(spec)
                problem = probe_assign(api, spec["key"], ctxs[0] if ctxs else None)
            except RuntimeError as exc:
                problem = str(exc)[:300]
            if problem:
                skipped[name] = f"n/a (bandits unavailable): {problem}"
                log(f"  {label}: {skipped[name]}")
                continue
            versions[name] = train(api, db, spec, ctxs)
            bodies = [body(spec["key"], c) for c in ctxs] if ctxs else [body(spec["key"])]
            measured[name] = measure(label, api.url("/v1/assign"), bodies, channel)

        problem = probe_contact_policy(api)
        if problem:
            skipped["contact"] = f"skipped: {problem}"
            log(f"  contact policy: {skipped['contact']}")
        else:
            api.create_experiment(fixed_spec("fixed-contact", contact_policy_now()))
            measured["contact"] = measure("fixed split + contact policy", api.url("/v1/assign"),
                                          [body("fixed-contact")], channel)

        problem = probe_profile_features(api)
        if problem:
            skipped["profile"] = f"skipped: {problem}"
            log(f"  profile features: {skipped['profile']}")
        else:
            api.create_experiment(linucb_spec("linucb-profile", source="profile"))
            subjects = [f"profiled-{i}" for i in range(1000)]
            store_profiles(api, subjects, contexts(len(subjects), seed=11))
            measured["profile"] = measure("LinUCB, features from the profile", api.url("/v1/assign"),
                                          [body("linucb-profile", None, s) for s in subjects], channel)

        measured["bare2"] = measure("bare Flask (after)", bare.url("/bare"), bare_body)

        log(f"batch: POST /v1/assign/batch with {args.batch_size:,} subjects on the fixed split")
        batch_times, batch_bytes = [], 0
        for run_no in range(args.batch_runs):
            subjects = [{"subject_id": f"batch{run_no}-{i}"} for i in range(args.batch_size)]
            payload = json.dumps({"experiment": "fixed-split", "channel": "email", "subjects": subjects}).encode()
            t0 = time.perf_counter()
            response = api.http.post(api.url("/v1/assign/batch"), data=payload, timeout=600,
                                     headers={**channel, "Content-Type": "application/json"})
            content = response.content
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(f"batch assign: {response.status_code} {content[:500]!r}")
            got = len(json.loads(content)["assignments"])
            if got != args.batch_size:
                raise RuntimeError(f"batch assign answered {got} assignments for {args.batch_size} subjects")
            batch_times.append(elapsed)
            batch_bytes = len(content)
            log(f"  batch run {run_no + 1}: {elapsed:.2f} s ({len(payload) / 1e6:.1f} MB in, "
                f"{batch_bytes / 1e6:.1f} MB out)")

    ceiling = (measured["bare"].rate + measured["bare2"].rate) / 2
    targets = {"fixed": 0.5, "linucb": 0.33}
    skip_notes: list[str] = []
    rows = [["bare Flask `POST /bare` (ceiling, mean of before/after)", fmt_int(ceiling), "", "", "1.00", "", ""]]
    floor = measured["floor"]
    rows.append(["bare Flask + one stored row `POST /bare/insert` (floor for a stored decision)",
                 fmt_int(floor.rate), fmt_ms(floor.p50_ms), fmt_ms(floor.p99_ms), fmt_ratio(floor.rate / ceiling),
                 "", ""])
    for name, label in [("fixed", "fixed split (3 arms)"), ("ts", "Thompson sampling (3 arms)"),
                        ("linucb", "LinUCB (10 arms, 10 numeric features)"),
                        ("contact", "fixed split + contact policy"),
                        ("profile", "LinUCB, features from the subject profile")]:
        target = targets.get(name)
        target_text = f">= {target:.2f} x bare" if target else ""
        if name in skipped:
            short_reason = "n/a (bandits unavailable)" if skipped[name].startswith("n/a") else "skipped"
            rows.append([label, short_reason, "", "", "", target_text, "n/a" if target else ""])
            skip_notes.append(f"{label}: {skipped[name]}")
            continue
        r = measured[name]
        ratio = r.rate / ceiling if ceiling else float("nan")
        met = verdict(ratio >= target) if target else ""
        errors = f" ({r.errors} errors)" if r.errors else ""
        rows.append([label + errors, fmt_int(r.rate), fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), fmt_ratio(ratio),
                     target_text, met])
    b = measured["bare"]
    rows[0][2], rows[0][3] = fmt_ms(b.p50_ms), fmt_ms(b.p99_ms)
    notes = [
        machine_note(),
        f"client: {kind}, {layout[0]} process(es) x {layout[1]} keep-alive connections, {args.seconds:g} s measured "
        f"after 1 s warm-up per row, a new subject_id on every request",
        f"bare Flask before/after: {measured['bare'].rate:,.0f}/s and {measured['bare2'].rate:,.0f}/s",
        "the floor row is the bare endpoint plus the cheapest durable write of one decision (a prepared INSERT "
        "on a connection each thread keeps, autocommit): what any endpoint that stores a decision before "
        f"answering pays; the fixed split runs at {measured['fixed'].rate / floor.rate:.2f} x the floor",
        "Thompson sampling and LinUCB decide from a trained policy (3,000 imported decisions, refitted: "
        + ", ".join(f"{k} snapshot v{v}" for k, v in versions.items()) + "); the profile-feature row is cold",
        *skip_notes,
        *warnings,
    ]
    print_table("POST /v1/assign: decisions per second",
                ["endpoint", "decisions/s", "p50 ms", "p99 ms", "x bare", "target", "met"], rows, notes)

    median = statistics.median(batch_times)
    print_table(
        f"POST /v1/assign/batch: one send list of {args.batch_size:,} subjects (fixed split)",
        ["runs", "median s", "min s", "max s", "subjects/s", "target", "met"],
        [[str(len(batch_times)), fmt_s(median), fmt_s(min(batch_times)), fmt_s(max(batch_times)),
          fmt_int(args.batch_size / median), "< 3 s", verdict(median < 3.0)]],
        [f"wall time of the request as a client sees it: {args.batch_size:,} subjects sent as one JSON body, "
         f"every decision stored before the answer ({batch_bytes / 1e6:.1f} MB of JSON) is read back"],
    )
    if cal_rows:
        print_table("Load generator: bare Flask rate by client layout (the fastest is used above)",
                    ["client", "processes x connections", "concurrency", "requests/s", "p50 ms", "p99 ms",
                     "errors", ""], cal_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per row")
    parser.add_argument("--calibration-seconds", type=float, default=1.5)
    parser.add_argument("--skip-calibration", action="store_true", help="use 1 process x 8 connections")
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--batch-runs", type=int, default=3)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
