"""How every table is placed on Citus (distributed PostgreSQL), and the DDL that places them.

The distribution column is the subject (customer id): a subject's decisions, events, outcome
summaries, profile and suppressions live in one shard group, so deciding (the guarded insert and
the contact history), attribution and erasure are router queries on one worker. Small tables
that every worker reads (experiments, arms, keys) are reference tables, copied to every node.
Bookkeeping that only the service's own jobs touch stays on the coordinator.

Citus can only enforce a primary key or a unique constraint within one shard, so every one of
them on a distributed table must include the distribution column; a foreign key between
distributed tables must be colocated and include it; a reference table may point only at
reference tables. `violations` checks these rules against a table (from the models or reflected
from a database); `PENDING_CHANGES` says, for the tables that break them today, which schema
change lifts the block and what it costs. `citus_ddl` writes the script an operator runs on the
coordinator (`nextbest db citus-ddl`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Engine, ForeignKeyConstraint, Index, MetaData, Table, UniqueConstraint, text
from sqlalchemy.dialects import postgresql

Kind = Literal["reference", "distributed", "coordinator-local"]

# The colocation group of the subject: its anchor table, and the column every member hashes on.
ANCHOR = "subjects"
SUBJECT_COLUMN = "subject_id"
DEFAULT_SHARD_COUNT = 64


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one table lives on Citus, and why."""

    kind: Kind
    reason: str
    column: str | None = None  # the distribution column (distributed tables only)
    colocate_with: str | None = None  # ANCHOR, another table of this manifest, or "none" for a group of its own
    arrives_with: str | None = None  # set while the table is declared ahead of the change that creates it

    @property
    def colocated_with_subjects(self) -> bool:
        return self.kind == "distributed" and self.colocate_with == ANCHOR


def reference(reason: str, arrives_with: str | None = None) -> Placement:
    return Placement("reference", reason, arrives_with=arrives_with)


def by_subject(reason: str, arrives_with: str | None = None) -> Placement:
    return Placement("distributed", reason, SUBJECT_COLUMN, ANCHOR, arrives_with)


def distributed(column: str, reason: str, colocate_with: str = "none", arrives_with: str | None = None) -> Placement:
    """A distributed table not colocated with the subjects: the reason says why it cannot be."""
    return Placement("distributed", reason, column, colocate_with, arrives_with)


def coordinator_local(reason: str, arrives_with: str | None = None) -> Placement:
    return Placement("coordinator-local", reason, arrives_with=arrives_with)


_ROLLUPS = "the rollup tables maintained by triggers on assignments and decision_outcomes"
_PARTITIONING = "the time partitioning of assignments, events and decision_outcomes"

MANIFEST: dict[str, Placement] = {
    # Reference: small, read by every worker (the guarded insert joins do_not_contact on the subject's
    # node), written rarely; a write goes to every node in one distributed transaction.
    "experiments": reference("read by every decision and report; tens to hundreds of rows"),
    "arms": reference("read with its experiment; a few rows per experiment"),
    "api_keys": reference("read per request (cached); written when keys are created or revoked"),
    "policy_snapshots": reference("a snapshot per refit per experiment, read by every app host's policy cache"),
    "webhooks": reference("a handful of subscribers; webhook_deliveries (coordinator-local) points at it"),
    "clv_models": reference("one row per CLV fit"),
    "server_secrets": reference("one row (the pseudonym key); read wherever a subject is pseudonymised"),
    "do_not_contact": reference(
        "keyed by an HMAC of an erased subject's id, so it cannot be colocated with the subject; the guarded "
        "decision insert checks it on the subject's node, so it must be on every node; written only by erasures"),
    # The subject's colocation group: everything about one customer on one worker.
    "subjects": by_subject("the anchor of the subject's colocation group: the profile"),
    "assignments": by_subject("decisions: written by deciding, read by the contact history and attribution"),
    "events": by_subject("outcomes: attribution and the contact history read a subject's events"),
    "decision_outcomes": by_subject("per-decision summaries, written in the same batch as the subject's events"),
    "decision_custom_outcomes": by_subject("per-decision custom-event counts, as decision_outcomes"),
    "suppressions": by_subject("the guarded decision insert checks the subject's suppressions on its node"),
    "transactions": by_subject("purchases: the contact policy reads a subject's latest one; CLV fits fan out"),
    "subject_values": by_subject("CLV estimates per subject, read with the profile"),
    "subject_arm_sums": by_subject("per-subject sums per arm, kept by a trigger on the subject's own rows",
                                   arrives_with=_ROLLUPS),
    # Distributed, but not by subject.
    "idempotency_keys": distributed(
        "idempotency_key",
        "an idempotency key names a request, not a subject (a batch request spans thousands of subjects); "
        "distributed by the key so a claim is one single-shard lookup; key_id would put each caller on one shard"),
    "event_keys": distributed(
        "event_id",
        "the dedupe of client-given event ids is global (a retry may name another subject, or none), so it is "
        "keyed by event_id alone; a batch checks its ids in the same transaction as it writes the events",
        arrives_with=_PARTITIONING),
    "arm_day_rollups": distributed(
        "experiment_id",
        "report rollups are per experiment: a report reads one shard instead of fanning out over every "
        "subject shard; not colocated with the decisions that feed them (see PENDING_CHANGES)",
        arrives_with=_ROLLUPS),
    "arm_cluster_sums": distributed(
        "experiment_id", "per-experiment report sums, as arm_day_rollups", colocate_with="arm_day_rollups",
        arrives_with=_ROLLUPS),
    # Coordinator-local: the service's own bookkeeping, written where its jobs run.
    "audit_log": coordinator_local(
        "lifecycle, promotion and erasure records, read per experiment by analysts; as a reference table "
        "every erasure's record would be written on every node"),
    "job_leases": coordinator_local("one row per periodic job, renewed every few seconds by its holder"),
    "suppressed_requests": coordinator_local(
        "per experiment and day counters of refused requests, upserted by batches; as a reference table "
        "every such upsert would be written on every node"),
    "webhook_deliveries": coordinator_local("the outgoing notice queue, read by the delivery job"),
    "log_retention": coordinator_local("retention bookkeeping of the time partitions, run by one job",
                                       arrives_with=_PARTITIONING),
}


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """What a table needs before Citus can distribute it, and what that costs."""

    change: str
    cost: str


# The tables whose current schema breaks the rules of `violations`. Each entry goes when its change
# lands (tests/service/test_distribution.py fails the day a table passes while still listed).
PENDING_CHANGES: dict[str, SchemaChange] = {
    "assignments": SchemaChange(
        change="primary key (subject_id, id) instead of (id) (with the time partitioning: (subject_id, id, "
               "created_at)); every lookup by id alone must also name the subject: GET /v1/assignments/{id} "
               "(explain.py's session.get), ON CONFLICT (id) of imported history (history.py), and events "
               "that carry only an assignment_id (ingest.py's load_decisions_by_id)",
        cost="the key index carries the subject id as well (the decision log's largest index grows by about "
             "the subject id's length per row); without the subject, GET /v1/assignments/{id} and the "
             "attribution of an event that names only its assignment_id fan out to every shard: either the "
             "channel sends subject_id with each event (the API already accepts it and checks it against the "
             "decision), or assignment ids embed the subject's shard so the service can route them"),
    "events": SchemaChange(
        change="primary key (subject_id, id) (with the time partitioning: plus its time column); subject_id "
               "NOT NULL (an event naming an unknown assignment and no subject needs a placeholder subject or "
               "a table of its own); the global uniqueness of event_id moves to event_keys(event_id), "
               "distributed by event_id, and ingest.py's ON CONFLICT (event_id) on events becomes an insert "
               "into event_keys ... ON CONFLICT DO NOTHING RETURNING that gates the events insert",
        cost="one more index entry per event (event_keys: the event id and a timestamp) on another shard, so "
             "every batch is a two-phase commit over the workers it touches (a batch of many subjects touches "
             "them all anyway); events without a subject concentrate on one shard if given a placeholder"),
    "decision_outcomes": SchemaChange(
        change="a subject_id column (NOT NULL, backfilled from assignments) and primary key (subject_id, "
               "assignment_id); ingest.py's summary upsert writes the subject it already holds "
               "(DecisionInfo.subject_id) and conflicts on (subject_id, assignment_id)",
        cost="the narrow per-decision table the reports scan grows by the subject id per row; the rollup "
             "triggers and erasure (which can then delete by subject_id) change with it"),
    "decision_custom_outcomes": SchemaChange(
        change="a subject_id column (NOT NULL, backfilled) and primary key (subject_id, assignment_id, "
               "event_type), written by ingest.py like decision_outcomes",
        cost="the subject id per row of a small table; ingest's custom-count upsert conflicts on the new key"),
    "transactions": SchemaChange(
        change="primary key (subject_id, id) instead of (id); the uniqueness of external_id either becomes "
               "(subject_id, external_id) or moves to a transaction_keys(external_id) table distributed by "
               "external_id (value.py's import conflicts on it)",
        cost="per subject, a purchase re-imported under another subject id is stored twice; a keys table "
             "keeps global dedupe at one more write per purchase on another shard"),
}


# Changes Citus needs that the rules cannot see in a table's shape (triggers, locks): the DDL prints
# them beside the table, and the deployment notes list them.
RUNTIME_CHANGES: dict[str, SchemaChange] = {
    "arm_day_rollups": SchemaChange(
        change="its maintenance: a row trigger firing on a worker's assignments or decision_outcomes shard "
               "cannot write this table (another shard group, usually on another node) safely or cheaply; "
               "on Citus it is kept per batch from the coordinator (one increment per batch, arm and day), "
               "or rebuilt by a periodic fan-out aggregate over decision_outcomes",
        cost="reports read the rollups up to one refresh behind, or the per-row trigger becomes a per-batch "
             "statement in the service"),
    "arm_cluster_sums": SchemaChange(
        change="as arm_day_rollups: its trigger cannot run on the workers' decision shards",
        cost="as arm_day_rollups"),
    "subject_arm_sums": SchemaChange(
        change="none to the table (colocated with the rows whose triggers keep it); Citus runs triggers on "
               "distributed tables only with citus.enable_unsafe_triggers on, which is safe here because the "
               "trigger writes the same subject's shard",
        cost="the setting must be on for the cluster; a shard move re-creates the triggers with the shards"),
}


# --------------------------------------------------------------------------- the rules


def _unique_keys(table: Table) -> list[tuple[str, list[str]]]:
    """(name, columns) of the primary key, every unique constraint and every unique index."""
    keys: list[tuple[str, list[str]]] = []
    if table.primary_key is not None and len(table.primary_key.columns):
        keys.append(("primary key", [c.name for c in table.primary_key.columns]))
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            keys.append((f"unique constraint {constraint.name or ''}".strip(), [c.name for c in constraint.columns]))
    for index in table.indexes:
        if isinstance(index, Index) and index.unique:
            columns = [c.name for c in index.columns]
            if not columns and index.expressions:  # an expression index: the columns it mentions
                columns = [c.name for e in index.expressions for c in getattr(e, "base_columns", ())]
            keys.append((f"unique index {index.name}", columns))
    return keys  # a column's unique=True is a UniqueConstraint here too


def _type_text(table: Table, column: str) -> str:
    return str(table.c[column].type.compile(dialect=postgresql.dialect())).lower()


def violations(table: Table, tables: Mapping[str, Table], manifest: Mapping[str, Placement] = MANIFEST) -> list[str]:
    """Why Citus cannot place `table` as the manifest says (empty when it can).

    `tables` are the other tables by name (for foreign keys and the colocation anchor's column type).
    """
    placement = manifest.get(table.name)
    if placement is None:
        return [f"{table.name} has no placement in the distribution manifest"]
    found: list[str] = []
    if placement.kind == "distributed":
        column = placement.column or ""
        if column not in table.c:
            return [f"{table.name} has no column {column!r} to distribute by"]
        if table.c[column].nullable:
            found.append(f"{table.name}.{column} is nullable: Citus cannot place a row whose distribution "
                         "column is NULL")
        for name, columns in _unique_keys(table):
            if column not in columns:
                found.append(f"{table.name}'s {name} ({', '.join(columns)}) does not include the distribution "
                             f"column {column}: Citus enforces uniqueness only within a shard")
        if placement.colocated_with_subjects and ANCHOR in tables and table.name != ANCHOR:
            mine, anchor = _type_text(table, column), _type_text(tables[ANCHOR], SUBJECT_COLUMN)
            if mine != anchor:
                found.append(f"{table.name}.{column} is {mine} but {ANCHOR}.{SUBJECT_COLUMN} is {anchor}: "
                             "colocated tables must hash the same type")
    for constraint in table.constraints:
        if isinstance(constraint, ForeignKeyConstraint):
            found.extend(_foreign_key_violations(table, placement, constraint, manifest))
    return found


def _group(name: str, placement: Placement) -> str:
    """The colocation group of a distributed table: named by its first table."""
    return name if placement.colocate_with in (None, "none") else placement.colocate_with


def _foreign_key_violations(table: Table, placement: Placement, constraint: ForeignKeyConstraint,
                            manifest: Mapping[str, Placement]) -> list[str]:
    target_name = constraint.referred_table.name
    target = manifest.get(target_name)
    label = f"{table.name}'s foreign key ({', '.join(c.name for c in constraint.columns)}) to {target_name}"
    if target is None:
        return [f"{label}: {target_name} has no placement in the manifest"]
    if target.kind == "reference":
        return []  # every kind of table may point at a reference table
    if placement.kind == "reference":
        return [f"{label}: a reference table may only point at reference tables, not a {target.kind} one"]
    if placement.kind == "coordinator-local":
        if target.kind == "coordinator-local":
            return []
        return [f"{label}: a coordinator-local table cannot point at a distributed table"]
    if target.kind != "distributed":
        return [f"{label}: a distributed table cannot point at a {target.kind} table"]
    if _group(table.name, placement) != _group(target_name, target):
        return [f"{label}: the two distributed tables are not colocated"]
    pairs = {(e.parent.name, e.column.name) for e in constraint.elements}
    if (placement.column, target.column) not in pairs:
        return [f"{label}: it must map {table.name}.{placement.column} to {target_name}.{target.column} "
                "(the distribution columns)"]
    return []


# --------------------------------------------------------------------------- the DDL


@dataclass
class CitusScript:
    """The statements an operator runs on the coordinator, and the tables that cannot be placed yet."""

    statements: list[str] = field(default_factory=list)
    blocked: dict[str, list[str]] = field(default_factory=dict)  # table -> violations
    unplaced: list[str] = field(default_factory=list)  # tables of the database the manifest does not name

    @property
    def complete(self) -> bool:
        return not self.blocked and not self.unplaced

    def sql(self) -> str:
        return "\n".join(self.statements) + "\n"


def _dependency_order(names: Iterable[str], tables: Mapping[str, Table]) -> list[str]:
    """Referenced tables before the tables that point at them (then by name), so each call finds its targets."""
    pending = sorted(names)
    done: list[str] = []
    while pending:
        ready = [n for n in pending
                 if not any(fk.referred_table.name in pending and fk.referred_table.name != n
                            for fk in tables[n].foreign_key_constraints)]
        ready = ready or pending[:1]  # a cycle: break it by name
        done.extend(ready)
        pending = [n for n in pending if n not in ready]
    return done


def _literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def citus_ddl(tables: Mapping[str, Table], shard_count: int = DEFAULT_SHARD_COUNT,
              manifest: Mapping[str, Placement] = MANIFEST) -> CitusScript:
    """The Citus DDL placing `tables` (a database's tables by name) as the manifest says.

    A table that breaks the rules is written as a comment with its reasons instead of a call, so the
    script never distributes a table Citus would reject or misplace.
    """
    script = CitusScript()
    out = script.statements
    present = {name: t for name, t in tables.items() if name != "alembic_version"}
    script.unplaced = sorted(n for n in present if n not in manifest)
    for name in sorted(present):
        if name in manifest and (found := violations(present[name], present, manifest)):
            script.blocked[name] = found
    out += [
        "-- Citus placement of the nextbest tables (nextbest db citus-ddl). Run on the coordinator, once,",
        "-- after `nextbest db upgrade`, with the workers added (citus_add_node) and the coordinator in the",
        "-- metadata (citus_set_coordinator_host), which coordinator-local tables with foreign keys to",
        "-- reference tables need. alembic_version stays a plain table on the coordinator.",
        "CREATE EXTENSION IF NOT EXISTS citus;",
        f"SET citus.shard_count = {int(shard_count)};",
    ]

    def placed(kind: Kind) -> list[str]:
        return [n for n in _dependency_order((n for n in present if n in manifest and manifest[n].kind == kind),
                                             present)]

    def emit(name: str, call: str) -> None:
        if name in script.blocked:
            out.append(f"-- blocked: {call}")
            out.extend(f"--   {reason}" for reason in script.blocked[name])
            if name in PENDING_CHANGES:
                out.append(f"--   needs: {PENDING_CHANGES[name].change}")
        else:
            out.append(call)
        if name in RUNTIME_CHANGES:
            out.append(f"-- note: {RUNTIME_CHANGES[name].change}")

    out.append("\n-- Reference tables: a copy on every node.")
    for name in placed("reference"):
        emit(name, f"SELECT create_reference_table({_literal(name)});")
    distributed_names = placed("distributed")
    anchors = [n for n in distributed_names if n == ANCHOR]
    colocated = [n for n in distributed_names if manifest[n].colocate_with == ANCHOR and n != ANCHOR]
    others = [n for n in distributed_names if n not in anchors and n not in colocated]
    # A group's first table before the tables colocated with it.
    others.sort(key=lambda n: (manifest[n].colocate_with not in ("none", None), n))
    out.append(f"\n-- The subject's colocation group, hashed on {SUBJECT_COLUMN}.")
    for name in anchors:
        emit(name, f"SELECT create_distributed_table({_literal(name)}, {_literal(SUBJECT_COLUMN)}, "
                   "colocate_with => 'none');")
    for name in colocated:
        placement = manifest[name]
        emit(name, f"SELECT create_distributed_table({_literal(name)}, {_literal(placement.column or '')}, "
                   f"colocate_with => {_literal(ANCHOR)});")
    if others:
        out.append("\n-- Distributed by another column, not colocated with the subjects.")
    for name in others:
        placement = manifest[name]
        emit(name, f"SELECT create_distributed_table({_literal(name)}, {_literal(placement.column or '')}, "
                   f"colocate_with => {_literal(placement.colocate_with or 'none')});")
    local = placed("coordinator-local")
    if local:
        out.append("\n-- Coordinator-local tables, in the metadata so foreign keys to reference tables hold.")
    for name in local:
        emit(name, f"SELECT citus_add_local_table_to_metadata({_literal(name)});")
    if script.unplaced:
        out.append("\n-- Not in the manifest (left where they are; add them to service/store/distribution.py):")
        out.extend(f"--   {name}" for name in script.unplaced)
    return script


def reflect(engine: Engine) -> dict[str, Table]:
    """The database's tables by name, as the database has them (the migrations' schema, not the models').

    Partitions of a partitioned table are left out: Citus distributes them with their parent.
    """
    metadata = MetaData()
    metadata.reflect(bind=engine)
    tables = dict(metadata.tables)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            partitions = connection.execute(text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relispartition AND n.nspname = current_schema()")).scalars().all()
        for name in partitions:
            tables.pop(name, None)
    return tables
