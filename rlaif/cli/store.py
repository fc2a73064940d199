"""``rlaif store``: look inside a run's LMDB store, check every record, export it as JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rlaif.cli.app import console, fail, handle_errors

store_app = typer.Typer(help="Inspect, verify and export run stores.", no_args_is_help=True)


@store_app.command("inspect")
@handle_errors
def inspect_store(
    run_dir: Path = typer.Argument(..., help="A run directory written by `rlaif run`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Runs, steps, record counts per shard kind, oracles and size on disk."""
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        stats = store.stats()
    if as_json:
        print(json.dumps(stats, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"store {run_dir}")
    table.add_column("field")
    table.add_column("value")
    for key, value in stats.items():
        table.add_row(
            str(key), json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        )
    console.print(table)
    # inspect reads keys and commit markers, not every record: it must not read as a bill of health.
    console.print(
        f"inspect reads keys and commit markers only; `rlaif store verify {run_dir}` checks every record"
    )


@store_app.command("verify")
@handle_errors
def verify_store(
    run_dir: Path = typer.Argument(..., help="A run directory written by `rlaif run` (or its store.lmdb)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of one line per damaged record."),
) -> None:
    """Check every record's checksum and contents and every shard's record count; list
    each damaged record by key and exit 1 if there is any."""
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        report = store.verify()
    if as_json:
        print(json.dumps({"path": report.path, "records": report.records, "checksums": report.checksums,
                          "ok": report.ok, "damaged": [vars(d) for d in report.damaged]}, indent=2))  # fmt: skip
        if not report.ok:
            raise typer.Exit(1)
        return
    for damage in report.damaged:
        console.print(f"damaged: {damage.describe()}", highlight=False, soft_wrap=True, markup=False)
    checked = (
        "checksum and contents" if report.checksums else "contents only (a store/1 store has no checksums)"
    )
    if not report.ok:
        fail(f"{len(report.damaged)} problem(s) in {report.records} records of {report.path}; restore the store "
             "from a backup, or `rlaif store export` a good copy and `rlaif store import` it")  # fmt: skip
    console.print(
        f"ok: {report.records} records in {report.path} verified ({checked})", highlight=False, soft_wrap=True
    )


@store_app.command("export")
@handle_errors
def export_store(
    run_dir: Path = typer.Argument(..., help="A run directory written by `rlaif run`."),
    to: Path = typer.Option(..., "--to", help="Output JSONL file."),
) -> None:
    """Write every record as one JSON object per line (round-trips with `store import`):
    the run's config, the prompts its rollouts answer, rollouts, rankings and metrics."""
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        count = store.export(to)
    console.print(f"wrote {count} records to {to}")


@store_app.command("import")
@handle_errors
def import_store(
    run_dir: Path = typer.Argument(..., help="A new (empty) run directory."),
    source: Path = typer.Option(..., "--from", help="A JSONL file written by `store export`."),
) -> None:
    """Load a JSONL export into a new store."""
    from rlaif.core.store import RunStore

    with RunStore(run_dir) as store:
        count = store.import_jsonl(source)
    console.print(f"imported {count} records into {run_dir}")
