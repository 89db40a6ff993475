"""The `nextbest` command line: serve, migrate, keys, import, report, jobs, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import config as config_module
from . import db as db_module


def _database() -> db_module.Database:
    return db_module.Database(config_module.load()["DATABASE_URL"])


def _require_migrated(database: db_module.Database) -> None:
    if database.current_revision() != db_module.head_revision():
        raise click.ClickException("the database is not at the latest migration; run `nextbest db upgrade` first")


@click.group()
def main() -> None:
    """nextbest: experiments and bandits for next-best-offer marketing."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--threads", default=4, show_default=True, type=int, help="threads per worker")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API under gunicorn."""
    database = _database()
    _require_migrated(database)
    database.dispose()
    if workers > 1 and not config_module.load().get("NEXTBEST_SECRET_KEY"):
        click.echo("warning: NEXTBEST_SECRET_KEY is not set; dashboard sign-ins will not survive a change of "
                   "worker. Set it to a long random string.", err=True)
    from .wsgi_server import run

    run(host=host, port=port, workers=workers, threads=threads)


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


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--scope", type=click.Choice(["channel", "analyst", "admin"]), required=True)
@click.option("--name", required=True)
def keys_create(scope: str, name: str) -> None:
    """Create a key; its secret is printed once, on the last line."""
    from .auth import create_key

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

    from .models import ApiKey

    database = _database()
    with database.session() as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            click.echo(f"{key.id}\t{key.prefix}\t{key.scope}\t{key.name}\t{state}")


@keys.command("revoke")
@click.argument("ident")
def keys_revoke(ident: str) -> None:
    """Revoke a key by id, prefix or name; takes effect at once on every worker."""
    from .auth import revoke_key

    database = _database()
    with database.session() as session:
        count = revoke_key(session, ident)
    if not count:
        raise click.ClickException(f"no active key matches {ident!r}")
    click.echo(f"revoked {count} key(s)")


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
    from .history import import_file

    database = _database()
    _require_migrated(database)
    fmt = fmt or ("ndjson" if file.suffix in (".ndjson", ".jsonl") else "csv")
    with database.session() as session:
        result = import_file(session, experiment, file.read_bytes(), fmt, columns,
                             generate_subject_ids=generate_subject_ids)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.argument("experiment")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
def report(experiment: str, fmt: str) -> None:
    """Print an experiment's report."""
    from reports import build_report, report_to_csv, report_to_dict

    from .report_queries import report_input
    from .store import experiments as store

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
    from .leases import holder_name
    from .learning import refit_all

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        for result in refit_all(session, full=full, key=key, holder=holder_name("cli")):
            click.echo(json.dumps(result.as_json()))


@main.command("evaluate")
@click.argument("experiment")
@click.argument("candidates", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--refit-every", default=1000, show_default=True)
def evaluate_command(experiment: str, candidates: Path, refit_every: int) -> None:
    """Off-policy evaluation of the candidates in a JSON file ({"candidates": [...]}) on the logged decisions."""
    from .api.evaluation import evaluate_experiment
    from .schemas import EvaluateRequest

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
    from .leases import holder_name
    from .promotion import evaluate_all
    from .webhooks import deliver_due

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


@main.group()
def transactions() -> None:
    """Purchase history for the CLV model."""


@transactions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def transactions_import(file: Path) -> None:
    """Import purchases: subject_id, occurred_at (or date), amount, optional transaction_id."""
    from .value import import_transactions

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
@click.option("--horizon-weeks", default=52, show_default=True)
@click.option("--discount-rate-per-week", default=0.0027, show_default=True)
def clv_fit(horizon_weeks: int, discount_rate_per_week: float) -> None:
    """Fit BG/NBD + Gamma-Gamma on every purchase and conversion; store per-subject values."""
    from .value import fit

    database = _database()
    _require_migrated(database)
    with database.session() as session:
        click.echo(json.dumps(fit(session, horizon_weeks=horizon_weeks, discount_rate=discount_rate_per_week),
                              indent=2, default=str))


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
    from .demo import run_demo

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
