"""Every table has a Citus placement, and its keys and foreign keys let Citus place it there.

The rules (service/store/distribution.py): a distributed table's primary key and every unique
constraint or index include its distribution column, which is NOT NULL; a foreign key between
distributed tables is colocated and maps distribution column to distribution column; a reference
table points only at reference tables; a coordinator-local one at no distributed table.

The tables that break them today are marked xfail(strict=True), each with the change it needs: the
day that change lands the table passes, the strict marker fails the run, and it must be removed
(with its entry in distribution.PENDING_CHANGES).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Column, ForeignKey, ForeignKeyConstraint, Index, Integer, MetaData, String, Table, create_engine, text

from service.cli import EXIT_CODES, main
from service.store import distribution
from service.store.distribution import (
    ANCHOR,
    MANIFEST,
    PENDING_CHANGES,
    Placement,
    by_subject,
    citus_ddl,
    coordinator_local,
    distributed,
    reference,
    reflect,
    violations,
)
from service.store.models import Base

TABLES = dict(Base.metadata.tables)

# The tables Citus cannot place as the manifest says until their schema changes (one reason each).
UNRESOLVED = {
    "assignments": "primary key is (id) alone: needs (subject_id, id); lookups by assignment id alone must name "
                   "the subject",
    "events": "primary key (id) and unique event_id lack subject_id, and subject_id is nullable: needs "
              "(subject_id, id), subject_id NOT NULL and the event_id dedupe moved to event_keys",
    "decision_outcomes": "has no subject_id: needs the column (written by ingest) and primary key "
                         "(subject_id, assignment_id)",
    "decision_custom_outcomes": "has no subject_id: needs the column and primary key (subject_id, assignment_id, "
                                "event_type)",
    "transactions": "primary key (id) and unique external_id lack subject_id: needs (subject_id, id) and a "
                    "per-subject or keys-table dedupe of external_id",
}


def _placement_case(name: str) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=UNRESOLVED[name])] if name in UNRESOLVED else []
    return pytest.param(name, marks=marks, id=name)


def test_every_table_of_the_models_has_a_placement() -> None:
    missing = sorted(set(TABLES) - set(MANIFEST))
    assert not missing, f"tables without a Citus placement in service/store/distribution.py: {missing}"


def test_entries_for_tables_not_in_the_models_name_the_change_that_brings_them() -> None:
    stray = sorted(name for name, p in MANIFEST.items() if name not in TABLES and not p.arrives_with)
    assert not stray, f"manifest entries for tables no model defines (a typo, or a dropped table?): {stray}"


@pytest.mark.parametrize("name", [_placement_case(name) for name in sorted(MANIFEST)])
def test_the_table_can_be_placed_as_the_manifest_says(name: str) -> None:
    if name not in TABLES:
        pytest.skip(f"{name} is not in the models yet ({MANIFEST[name].arrives_with})")
    assert violations(TABLES[name], TABLES) == []


def test_the_unresolved_tables_are_the_ones_with_a_pending_schema_change() -> None:
    assert set(UNRESOLVED) == set(PENDING_CHANGES)
    for name, change in PENDING_CHANGES.items():
        assert change.change and change.cost, name


def test_placements_are_well_formed() -> None:
    for name, placement in MANIFEST.items():
        assert placement.reason, name
        if placement.kind == "distributed":
            assert placement.column, name
            group = placement.colocate_with
            assert group == "none" or group == ANCHOR or MANIFEST.get(group or "", reference("")).kind == "distributed"
        else:
            assert placement.column is None and placement.colocate_with is None, name
    assert MANIFEST[ANCHOR] == by_subject(MANIFEST[ANCHOR].reason)
    # The subject's data is one colocation group: deciding, contact rules and attribution stay on one node.
    for name in ("assignments", "events", "decision_outcomes", "suppressions", "subjects"):
        assert MANIFEST[name].colocated_with_subjects, name


# --------------------------------------------------------------------------- the rules themselves


def _schema(manifest: dict[str, Placement]) -> tuple[dict[str, Table], dict[str, Placement]]:
    metadata = MetaData()
    Table("subjects", metadata, Column("subject_id", String(200), primary_key=True))
    Table("experiments", metadata, Column("id", Integer, primary_key=True), Column("key", String(64), unique=True))
    Table("orders", metadata, Column("id", Integer, primary_key=True),
          Column("subject_id", String(200), primary_key=True),
          Column("experiment_id", ForeignKey("experiments.id")),
          Column("code", String(20)), Column("ref", String(20)),
          Index("ix_orders_code", "subject_id", "code", unique=True))
    Table("lines", metadata, Column("subject_id", String(200), nullable=False),
          Column("order_id", Integer), Column("line", Integer),
          ForeignKeyConstraint(["order_id", "subject_id"], ["orders.id", "orders.subject_id"]))
    base = {"subjects": by_subject("anchor"), "experiments": reference("small"), "orders": by_subject("x"),
            "lines": by_subject("x")}
    return dict(metadata.tables), {**base, **manifest}


def test_a_well_formed_schema_passes_and_its_ddl_is_complete() -> None:
    tables, manifest = _schema({})
    assert all(violations(t, tables, manifest) == [] for t in tables.values())
    script = citus_ddl(tables, manifest=manifest)
    assert script.complete and "-- blocked" not in script.sql()
    calls = [s for s in script.statements if s.startswith("SELECT")]
    assert calls == ["SELECT create_reference_table('experiments');",
                     "SELECT create_distributed_table('subjects', 'subject_id', colocate_with => 'none');",
                     "SELECT create_distributed_table('orders', 'subject_id', colocate_with => 'subjects');",
                     "SELECT create_distributed_table('lines', 'subject_id', colocate_with => 'subjects');"]


def test_a_unique_key_without_the_distribution_column_is_found() -> None:
    tables, manifest = _schema({})
    tables["orders"].append_constraint(Index("ix_orders_ref", tables["orders"].c.ref, unique=True))
    found = violations(tables["orders"], tables, manifest)
    assert len(found) == 1 and "ix_orders_ref" in found[0]
    found = violations(tables["experiments"], tables, {**manifest, "experiments": distributed("id", "x")})
    assert len(found) == 1 and "unique constraint (key)" in found[0]  # a column's unique=True counts too


def test_a_primary_key_without_the_distribution_column_is_found() -> None:
    tables, manifest = _schema({"experiments": distributed("key", "by key")})
    found = violations(tables["experiments"], tables, manifest)
    assert any("primary key (id)" in f for f in found)


def test_a_nullable_or_missing_distribution_column_is_found() -> None:
    tables, manifest = _schema({"orders": distributed("code", "by code")})
    found = violations(tables["orders"], tables, manifest)
    assert any("nullable" in f for f in found) and any("primary key" in f for f in found)
    tables, manifest = _schema({"experiments": by_subject("no such column")})
    assert violations(tables["experiments"], tables, manifest) == [
        "experiments has no column 'subject_id' to distribute by"]


def test_foreign_keys_between_distributed_tables_must_be_colocated_and_on_the_distribution_column() -> None:
    tables, manifest = _schema({"orders": distributed("subject_id", "a group of its own")})
    found = violations(tables["lines"], tables, manifest)
    assert len(found) == 1 and "not colocated" in found[0]
    metadata = MetaData()
    for name, table in tables.items():
        if name != "lines":
            table.to_metadata(metadata)
    lines = Table("lines", metadata, Column("subject_id", String(200), nullable=False),
                  Column("order_id", ForeignKey("orders.id")))
    tables = dict(metadata.tables)
    found = violations(lines, tables, _schema({})[1])
    assert len(found) == 1 and "must map lines.subject_id to orders.subject_id" in found[0]


def test_reference_and_local_tables_may_not_point_at_distributed_ones() -> None:
    tables, manifest = _schema({"lines": reference("wrongly small")})
    found = violations(tables["lines"], tables, manifest)
    assert len(found) == 1 and "reference table may only point at reference tables" in found[0]
    tables, manifest = _schema({"lines": coordinator_local("wrongly local")})
    found = violations(tables["lines"], tables, manifest)
    assert len(found) == 1 and "coordinator-local table cannot point at a distributed table" in found[0]
    tables, manifest = _schema({"orders": coordinator_local("local")})
    found = violations(tables["lines"], tables, manifest)
    assert len(found) == 1 and "cannot point at a coordinator-local table" in found[0]


def test_colocated_tables_must_hash_the_same_type() -> None:
    metadata = MetaData()
    tables, manifest = _schema({})
    tables["subjects"].to_metadata(metadata)
    odd = Table("odd", metadata, Column("subject_id", Integer, primary_key=True))
    found = violations(odd, dict(metadata.tables), {**manifest, "odd": by_subject("x")})
    assert len(found) == 1 and "must hash the same type" in found[0]


def test_a_table_missing_from_the_manifest_is_reported_by_the_ddl() -> None:
    tables, manifest = _schema({})
    del manifest["lines"]
    script = citus_ddl(tables, manifest=manifest)
    assert not script.complete and script.unplaced == ["lines"]


# --------------------------------------------------------------------------- the script for this schema


def test_the_ddl_places_every_table_once_in_a_runnable_order() -> None:
    script = citus_ddl(TABLES)
    sql = script.sql()
    assert set(script.blocked) == {n for n in TABLES if violations(TABLES[n], TABLES)}
    assert not script.unplaced
    for name in TABLES:
        lines = [s for s in script.statements if f"('{name}'," in s or f"('{name}')" in s]
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith("-- blocked: ") == (name in script.blocked)
    first_distributed = sql.index("create_distributed_table(")
    assert sql.rindex("create_reference_table(") < first_distributed
    assert sql.index("create_distributed_table('subjects'") == first_distributed  # the anchor first
    assert sql.index("SELECT create_reference_table('experiments')") < sql.index("create_reference_table('arms')")


def test_nextbest_db_citus_ddl_prints_the_script_for_the_migrated_database(app: Any, database_url: str) -> None:
    result = CliRunner().invoke(main, ["db", "citus-ddl", "--shard-count", "32"], env={"DATABASE_URL": database_url})
    engine = create_engine(database_url)
    try:
        tables = reflect(engine)
    finally:
        engine.dispose()
    script = citus_ddl(tables, shard_count=32)
    assert result.stdout == script.sql()
    assert "SET citus.shard_count = 32;" in result.stdout
    # The migrations' schema breaks exactly where the models' does.
    assert set(script.blocked) == set(citus_ddl(TABLES).blocked)
    if script.complete:
        assert result.exit_code == 0
    else:
        assert result.exit_code == EXIT_CODES["invalid"]
        assert "cannot be placed yet" in result.stderr and sorted(script.blocked)[0] in result.stderr


def test_the_manifest_module_names_its_runtime_changes_for_placed_tables() -> None:
    assert set(distribution.RUNTIME_CHANGES) <= set(MANIFEST)


def test_nextbest_db_citus_ddl_wants_a_migrated_database(tmp_path: Any) -> None:
    result = CliRunner().invoke(main, ["db", "citus-ddl"], env={"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
    assert result.exit_code == EXIT_CODES["database_unavailable"]
    assert result.stdout == "" and "nextbest db upgrade" in result.stderr


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_partitions_are_placed_with_their_parent(backend: str, pg_admin_url: str | None) -> None:
    if not pg_admin_url:
        pytest.skip("TEST_DATABASE_URL is not set")
    engine = create_engine(pg_admin_url)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
            connection.execute(text("CREATE TABLE measured (subject_id varchar(200) NOT NULL, at date NOT NULL, "
                                    "PRIMARY KEY (subject_id, at)) PARTITION BY RANGE (at)"))
            connection.execute(text("CREATE TABLE measured_2026 PARTITION OF measured "
                                    "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"))
        scoped = create_engine(pg_admin_url, connect_args={"options": f"-csearch_path={schema}"})
        try:
            assert sorted(reflect(scoped)) == ["measured"]
        finally:
            scoped.dispose()
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
