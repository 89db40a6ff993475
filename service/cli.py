"""The `nextbest` command line: serve, migrate, keys, experiments, import, report, jobs, partitions, demo.

Failures are one line on stderr with a distinct exit code (see EXIT_CODES), never a
traceback unless `--debug` is given.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import DBAPIError, OperationalError

from service import config as config_module
from service.store import db as db_module
from service.http.errors import ApiError

# 2 is click's own code for a usage error (an unknown option, a missing argument).
EXIT_CODES = {"error": 1, "usage": 2, "not_found": 3, "invalid": 4, "database_unavailable": 5}


class _Cli(click.Group):
    """The `nextbest` group: service errors become one line and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # every failure: one line, an exit code, the traceback only with --debug
            if ctx.params.get("debug") or ctx.meta.get("nextbest.debug"):
                traceback.print_exc()
            message, code = _explain(exc)
            click.echo(f"Error: {message}", err=True)
            ctx.exit(code)


def _explain(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, ApiError):
        code = {404: "not_found", 503: "database_unavailable"}.get(exc.status, "invalid")
        return exc.message, EXIT_CODES[code]
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return (f"the database cannot be reached ({exc.__class__.__name__}); check DATABASE_URL",
                EXIT_CODES["database_unavailable"])
    if isinstance(exc, (ValueError, json.JSONDecodeError)):
        return str(exc), EXIT_CODES["invalid"]
    return f"{exc.__class__.__name__}: {exc} (run with --debug for the traceback)", EXIT_CODES["error"]


def _database() -> db_module.Database:
    return db_module.Database(config_module.load()["DATABASE_URL"])


def _require_migrated(database: db_module.Database) -> None:
    if database.current_revision() != db_module.head_revision():
        raise ApiError(503, "the database is not at the latest migration; run `nextbest db upgrade` first")


@click.group(cls=_Cli)
@click.version_option(metadata.version("nextbest"), prog_name="nextbest")
@click.option("--debug", is_flag=True, help="show the traceback of a failure")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """nextbest: experiments and bandits for next-best-offer marketing.

    Exit codes: 0 success, 1 unexpected error, 2 usage, 3 not found, 4 invalid input or a
    conflict, 5 database unreachable or not migrated.
    """
    ctx.meta["nextbest.debug"] = debug


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--threads", default=4, show_default=True, type=int, help="threads per worker")
@click.option("--background", is_flag=True,
              help="start the server in the background and return once it answers /readyz")
@click.option("--pid-file", default="nextbest.pid", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="with --background: where the server's pid goes (`nextbest stop` reads it)")
@click.option("--log-file", default="nextbest.log", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="with --background: where the server's output goes")
def serve(host: str, port: int, workers: int, threads: int, background: bool, pid_file: Path,
          log_file: Path) -> None:
    """Serve the API under gunicorn."""
    database = _database()
    _require_migrated(database)
    database.dispose()
    if workers > 1 and not config_module.load().get("NEXTBEST_SECRET_KEY"):
        click.echo("warning: NEXTBEST_SECRET_KEY is not set; dashboard sign-ins will not survive a change of "
                   "worker. Set it to a long random string.", err=True)
    if background:
        from service.run.background import start_in_background

        pid = start_in_background(["serve", "--host", host, "--port", str(port), "--workers", str(workers),
                                   "--threads", str(threads)], host, port, pid_file, log_file)
        click.echo(f"serving on http://{host}:{port} (pid {pid}, log in {log_file}); stop it with `nextbest stop`")
        return
    from service.run.wsgi_server import run

    run(host=host, port=port, workers=workers, threads=threads)


@main.command()
@click.option("--pid-file", default="nextbest.pid", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
def stop(pid_file: Path) -> None:
    """Stop a server started with `serve --background`; in-flight requests finish first."""
    from service.run.background import stop_background

    pid = stop_background(pid_file)
    click.echo(f"stopped the server (pid {pid})" if pid else "no server was running")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations (the only way the schema changes)."""
    url = config_module.load()["DATABASE_URL"]
    db_module.upgrade(url, revision)
    click.echo(f"database at revision {db_module.Database(url).current_revision()}")


@db.command("downgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Undo migrations down to REVISION (e.g. `-1`, or a revision id)."""
    from alembic import command

    url = config_module.load()["DATABASE_URL"]
    command.downgrade(db_module.alembic_config(url), revision)
    click.echo(f"database at revision {db_module.Database(url).current_revision()}")


@db.command("current")
def db_current() -> None:
    """Print the database's revision and the latest one this release knows."""
    current = _database().current_revision()
    head = db_module.head_revision()
    state = "up to date" if current == head else "run `nextbest db upgrade`"
    click.echo(f"current {current or '(empty)'}, latest {head}: {state}")


@db.command("citus-ddl")
@click.option("--shard-count", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="shards per distributed table (fixed when a colocation group is created)")
def db_citus_ddl(shard_count: int) -> None:
    """Print the SQL that places this database's tables on Citus (run it on the coordinator).

    Tables whose schema Citus cannot distribute yet are printed as comments with the reason, and
    the command then exits 4 after printing, so a script piped on from it does not pass unnoticed.
    """
    from service.store import distribution

    database = _database()
    _require_migrated(database)
    script = distribution.citus_ddl(distribution.reflect(database.engine), shard_count=shard_count)
    click.echo(script.sql(), nl=False)
    if not script.complete:
        problems = [f"{name} (blocked: {len(found)} rule(s))" for name, found in sorted(script.blocked.items())]
        problems += [f"{name} (not in the manifest)" for name in script.unplaced]
        click.echo(f"Error: {len(problems)} table(s) cannot be placed yet: {', '.join(problems)}; "
                   "see the comments in the script", err=True)
        click.get_current_context().exit(EXIT_CODES["invalid"])


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--scope", type=click.Choice(["channel", "analyst", "admin", "metrics"]), required=True)
@click.option("--name", required=True)
def keys_create(scope: str, name: str) -> None:
    """Create a key; its secret is printed once, on the last line."""
    from service.http.auth import create_key

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        key, token = create_key(session, name, scope)
        click.echo(f"created {scope} key {key.name!r} (id {key.id}, prefix {key.prefix}); store the secret now:")
    click.echo(token)


@keys.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from sqlalchemy import select

    from service.store.models import ApiKey

    database = _database()
    with database.session() as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            click.echo(f"{key.id}\t{key.prefix}\t{key.scope}\t{key.name}\t{state}")


@keys.command("revoke")
@click.argument("ident")
def keys_revoke(ident: str) -> None:
    """Revoke one key by id, prefix or name; takes effect at once on every worker."""
    from service.http.auth import revoke_key

    database = _database()
    with database.session() as session:
        key = revoke_key(session, ident)
    click.echo(f"revoked key {key.name!r} (id {key.id}, prefix {key.prefix})")


@main.group()
def experiments() -> None:
    """Experiments: create from a spec file, list, show, start, pause, conclude."""


@experiments.command("create")
@click.option("-f", "--file", "spec_file", required=True, type=click.File("r"),
              help="the experiment spec as JSON (the body of POST /v1/experiments); - for stdin")
def experiments_create(spec_file: Any) -> None:
    """Create an experiment in draft from a spec file; the whole spec is validated."""
    from pydantic import ValidationError

    from experiments.spec import ExperimentSpec

    from service.store import experiments as store

    try:
        spec = ExperimentSpec.model_validate(json.load(spec_file))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, f"invalid spec: {problems}") from None
    database = _database()
    _require_migrated(database)
    with database.session() as session:
        experiment = store.create(session, spec, "cli")
        click.echo(f"created experiment {experiment.key!r} (draft); start it with "
                   f"`nextbest experiments start {experiment.key}`")


@experiments.command("list")
@click.option("--status", type=click.Choice(["draft", "running", "paused", "concluded"]), default=None)
def experiments_list(status: str | None) -> None:
    """One line per experiment: key, status, allocation, winner, name."""
    from sqlalchemy import select

    from service.store.models import Experiment

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        query = select(Experiment).order_by(Experiment.id)
        if status:
            query = query.where(Experiment.status == status)
        for experiment in session.scalars(query):
            allocation = (experiment.spec or {}).get("allocation", {})
            kind = allocation.get("policy", {}).get("name") if allocation.get("type") == "bandit" else "fixed"
            click.echo(f"{experiment.key}\t{experiment.status}\t{kind}\t{experiment.winner_arm or '-'}\t"
                       f"{experiment.name}")


@experiments.command("show")
@click.argument("key")
def experiments_show(key: str) -> None:
    """The stored experiment as JSON, as GET /v1/experiments/KEY returns it."""
    from service.store import experiments as store

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        click.echo(json.dumps(store.to_json(store.get(session, key)), indent=2))


def _lifecycle(key: str, action: str, reason: str | None, winner: str | None = None) -> None:
    from service.store import experiments as store

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        experiment = store.get(session, key, for_update=True)
        store.apply_action(session, experiment, action, "cli", winner=winner, reason=reason)
        click.echo(f"{experiment.key}: {experiment.status}")


@experiments.command("start")
@click.argument("key")
@click.option("--reason", default=None)
def experiments_start(key: str, reason: str | None) -> None:
    """Start a draft, or resume a paused experiment."""
    _lifecycle(key, "start", reason)


@experiments.command("pause")
@click.argument("key")
@click.option("--reason", default=None)
def experiments_pause(key: str, reason: str | None) -> None:
    """Pause: channels get the control arm until it is started again."""
    _lifecycle(key, "pause", reason)


@experiments.command("conclude")
@click.argument("key")
@click.option("--winner", default=None, help="the arm every channel gets from now on")
@click.option("--reason", default=None)
def experiments_conclude(key: str, winner: str | None, reason: str | None) -> None:
    """Conclude, optionally naming the winner."""
    _lifecycle(key, "conclude", reason, winner)


@main.command("import")
@click.argument("experiment")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default=None,
              help="default: from the file extension")
@click.option("--columns", default=None, help="rename source columns, e.g. segment:arm,visit:click,spend:revenue")
@click.option("--generate-subject-ids", is_flag=True, help="no subject_id column: one subject per row (line-<n>)")
def import_history(experiment: str, file: Path, fmt: str | None, columns: str | None,
                   generate_subject_ids: bool) -> None:
    """Import logged decisions and their outcomes from CSV or JSON lines."""
    from service.store.history import import_file

    database = _database()
    _require_migrated(database)
    fmt = fmt or ("ndjson" if file.suffix in (".ndjson", ".jsonl") else "csv")
    with database.session() as session, _progress("storing decisions") as progress:
        result = import_file(session, experiment, file.read_bytes(), fmt, columns,
                             generate_subject_ids=generate_subject_ids, progress=progress)
    click.echo(json.dumps(result, indent=2))


class _progress:
    """A click progress bar on stderr, started by the first report of (done, total)."""

    def __init__(self, label: str):
        self.label = label
        self.bar: Any = None

    def __enter__(self) -> Any:
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


@main.command()
@click.argument("experiment")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
def report(experiment: str, fmt: str) -> None:
    """Print an experiment's report."""
    from reports import build_report, report_to_csv, report_to_dict

    from service.store.report_queries import report_input
    from service.store import experiments as store

    database = _database()
    with database.session() as session:
        row = store.get(session, experiment)
        built = build_report(report_input(session, row, store.spec_of(row)))
    if fmt == "csv":
        click.echo(report_to_csv(built), nl=False)
    else:
        click.echo(json.dumps(report_to_dict(built), indent=2))


@main.command("refit")
@click.option("--full", is_flag=True, help="retrain from scratch on every known example")
@click.option("--experiment", "key", default=None, help="only this experiment")
def refit_command(full: bool, key: str | None) -> None:
    """Train bandit policies on newly known rewards and store new snapshots (for cron)."""
    from service.config import reward_grace_seconds
    from service.jobs.leases import holder_name
    from service.jobs.learning import refit_all

    database = _database()
    _require_migrated(database)
    failed = False
    with database.session() as session:
        for result in refit_all(session, full=full, key=key, holder=holder_name("cli"),
                                grace_seconds=reward_grace_seconds()):
            click.echo(json.dumps(result.as_json()))
            failed = failed or result.status == "failed"
    if failed:  # every other experiment was refitted; the exit status tells cron one was not
        raise SystemExit(1)


@main.command("evaluate")
@click.argument("experiment")
@click.argument("candidates", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--refit-every", default=1000, show_default=True)
def evaluate_command(experiment: str, candidates: Path, refit_every: int) -> None:
    """Off-policy evaluation of the candidates in a JSON file ({"candidates": [...]}) on the logged decisions."""
    from service.http.api.evaluation import evaluate_experiment
    from service.http.schemas import EvaluateRequest

    body = json.loads(candidates.read_text())
    body.setdefault("refit_every", refit_every)
    database = _database()
    _require_migrated(database)
    with database.session() as session:
        click.echo(json.dumps(evaluate_experiment(session, experiment, EvaluateRequest.model_validate(body)),
                              indent=2))


@main.command("promote")
def promote_command() -> None:
    """Evaluate promotion rules, promote clear winners, deliver due webhooks (for cron)."""
    from service.jobs.leases import holder_name
    from service.jobs.promotion import evaluate_all
    from service.jobs.webhooks import deliver_due

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        results = evaluate_all(session, holder=holder_name("cli"))
        for result in results:
            click.echo(json.dumps(result))
        click.echo(json.dumps({"webhooks": deliver_due(session)}))
    failed = [r["experiment"] for r in results if r.get("action") == "failed"]
    if failed:  # every other experiment was evaluated (and promoted) all the same; cron should still hear of it
        raise click.ClickException(f"the promotion check failed for {', '.join(failed)} (see the log)")


def _migrated_session() -> Any:
    database = _database()
    _require_migrated(database)
    return database.session()


@main.group()
def rollups() -> None:
    """Report rollups: the sums reports read, kept by the database as decisions and outcomes are stored."""


def _experiment_ids(session: Any, key: str | None) -> list[int] | None:
    from service.store import experiments as store

    return None if key is None else [store.get(session, key).id]


@rollups.command("rebuild")
@click.option("--experiment", "key", default=None, help="only this experiment")
def rollups_rebuild(key: str | None) -> None:
    """Recompute the rollups from the decision and outcome logs (holds writes to the logs while it runs)."""
    from service.store import rollups as rollup_store

    with _migrated_session() as session:
        started = time.monotonic()
        result = rollup_store.rebuild(session, _experiment_ids(session, key))
        session.commit()
    click.echo(json.dumps({**result, "seconds": round(time.monotonic() - started, 3)}))


@rollups.command("compact")
def rollups_compact() -> None:
    """Fold the rows each database backend keeps into one per arm and day (the jobs do it every pass)."""
    from service.store import rollups as rollup_store

    with _migrated_session() as session:
        folded = rollup_store.compact(session)
        session.commit()
    click.echo(json.dumps({"folded": folded}))


@rollups.command("check")
@click.option("--experiment", "key", default=None, help="only this experiment")
def rollups_check(key: str | None) -> None:
    """Compare the rollups with the logs; exit 4 and list the differences when they disagree."""
    from sqlalchemy import select

    from service.store import rollups as rollup_store
    from service.store.models import Experiment

    problems: list[str] = []
    with _migrated_session() as session:
        ids = _experiment_ids(session, key) or list(session.scalars(select(Experiment.id).order_by(Experiment.id)))
        for experiment_id in ids:
            problems += [f"experiment {experiment_id}: {p}" for p in rollup_store.verify(session, experiment_id)]
    for problem in problems:
        click.echo(problem)
    click.echo(json.dumps({"experiments": len(ids), "differences": len(problems)}))
    if problems:
        raise SystemExit(EXIT_CODES["invalid"])


@main.group()
def transactions() -> None:
    """Purchase history for the CLV model."""


@transactions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def transactions_import(file: Path) -> None:
    """Import purchases: subject_id, occurred_at (or date), amount, optional transaction_id."""
    from service.usecases.value import import_transactions

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        result = import_transactions(session, file.read_bytes(), "ndjson" if file.suffix in (".ndjson", ".jsonl")
                                     else "csv")
    click.echo(json.dumps(result, indent=2))


@main.group()
def clv() -> None:
    """The customer-lifetime-value model."""


@clv.command("fit")
@click.option("--as-of", default=None, metavar="DATE",
              help="calibrate on purchases up to this date (YYYY-MM-DD, through the end of that UTC day) or ISO 8601 "
                   "timestamp with a zone; T and recency are measured to its day  [default: now]")
@click.option("--holdout-end", default=None, metavar="DATE",
              help="also compare the predictions with the purchases made after --as-of through this date")
@click.option("--model", type=click.Choice(["bgnbd", "mbgnbd"]), default="bgnbd", show_default=True,
              help="mbgnbd: one-time buyers can have dropped out too (Batislam et al. 2007)")
@click.option("--horizon-weeks", default=52, show_default=True)
@click.option("--discount-rate-per-week", default=0.0027, show_default=True)
def clv_fit(as_of: str | None, holdout_end: str | None, model: str, horizon_weeks: int,
            discount_rate_per_week: float) -> None:
    """Fit BG/NBD (or MBG/NBD) + Gamma-Gamma on the purchases up to --as-of; store per-subject values."""
    from service.http.errors import ApiError
    from service.usecases.value import fit, parse_moment

    try:
        start = parse_moment(as_of, "--as-of") if as_of else None
        end = parse_moment(holdout_end, "--holdout-end") if holdout_end else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    database = _database()
    _require_migrated(database)
    with database.session() as session:
        try:
            result = fit(session, as_of=start, holdout_end=end, model=model,  # type: ignore[arg-type]
                         horizon_weeks=horizon_weeks, discount_rate=discount_rate_per_week)
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(json.dumps(result, indent=2, default=str))


@main.group()
def partitions() -> None:
    """Weekly partitions of the decision and event logs, and log retention (PostgreSQL)."""


@partitions.command("list")
def partitions_list() -> None:
    """Each log partition: its table, range and estimated rows."""
    from service.store.partitions import is_partitioned, list_partitions

    with _migrated_session() as session:
        if not is_partitioned(session):
            click.echo("the logs are single tables on this database (SQLite): there are no partitions")
            return
        for part in list_partitions(session):
            click.echo(json.dumps(part.as_json()))


@partitions.command("ensure")
@click.option("--ahead-weeks", default=4, show_default=True, type=click.IntRange(0, 520))
def partitions_ensure(ahead_weeks: int) -> None:
    """Create the partitions from last week to --ahead-weeks ahead (cron, without NEXTBEST_JOBS)."""
    from service.store.partitions import ensure, is_partitioned

    with _migrated_session() as session:
        if not is_partitioned(session):
            click.echo("the logs are single tables on this database (SQLite): nothing to create")
            return
        created = ensure(session, ahead_weeks=ahead_weeks)
        session.commit()
    click.echo(json.dumps({"created": created}))


@partitions.command("retire")
@click.option("--days", type=click.IntRange(1), default=None,
              help="retention in days  [default: NEXTBEST_LOG_RETENTION_DAYS]")
@click.option("--dry-run", is_flag=True, help="list what would be dropped, drop nothing")
def partitions_retire(days: int | None, dry_run: bool) -> None:
    """Drop log partitions older than the retention, record them in log_retention; refuses while a
    running experiment still needs them."""
    from service.jobs.leases import holder_name, lease
    from service.store.partitions import RetentionRefused, is_partitioned, retention_days, retire

    days = days or retention_days(config_module.load())
    if days is None:
        raise click.ClickException("no retention: set NEXTBEST_LOG_RETENTION_DAYS or pass --days")
    with _migrated_session() as session:
        if not is_partitioned(session):
            click.echo("log retention does nothing on SQLite: the logs are single tables there")
            return
        try:
            if dry_run:
                result = retire(session, days, dry_run=True)
                session.rollback()
            else:
                with lease(session, "partitions", holder_name("cli"), ttl_seconds=60) as held:
                    if not held:
                        raise click.ClickException("the partition job is running; try again shortly")
                    result = retire(session, days)
                    session.commit()
        except RetentionRefused as exc:
            session.rollback()
            raise ApiError(409, str(exc)) from None
    click.echo(json.dumps(result, indent=2))


@main.command("demo")
@click.option("--days", default=14, show_default=True, help="simulated days (one wave of customers each)")
@click.option("--per-day", default=1500, show_default=True, help="customers per experiment per day")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="hillstrom.csv (default: ../shared/data/hillstrom.csv)")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--keep-serving/--exit", default=None,
              help="keep the dashboard running afterwards (default: only when run from a terminal)")
def demo(days: int, per_day: int, out: Path, data: Path | None, port: int, keep_serving: bool | None) -> None:
    """Run the whole loop on the real Hillstrom customers, then leave the dashboard running."""
    from service.run.demo import run_demo

    data = data or _find_data("hillstrom.csv")
    if keep_serving is None:
        keep_serving = sys.stdin.isatty() and sys.stdout.isatty()
    run_demo(data, out, days=days, per_day=per_day, port=port, keep_serving=keep_serving)


def _find_data(name: str) -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = base.parent / "shared" / "data" / name
        if candidate.exists():
            return candidate
    raise click.ClickException(f"cannot find {name}; pass --data PATH")


def run() -> Any:  # pragma: no cover - console entry point
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
