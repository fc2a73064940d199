"""``rlaif plugins``: what is installed, from which package, and what failed to load."""

from __future__ import annotations

import json
from typing import Optional

import typer

from rlaif.cli.app import console, handle_errors

plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)


@plugins_app.command("list")
@handle_errors
def list_plugins(
    kind: Optional[str] = typer.Option(None, "--kind", help="policy | oracle | loss | benchmark"),  # noqa: UP045
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every component with its kind, name, package, version and load errors."""
    from rlaif.core.registry import iter_component_rows, load_plugins

    rows = list(iter_component_rows(load_plugins(), kind))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="rlaif plugins", show_lines=False)
    for col in ("kind", "name", "package", "version", "description"):
        table.add_column(col)
    for row in rows:
        if row["error"]:
            table.add_row(row["kind"] or "-", row["name"] or row["plugin"], row["package"] or "-",
                          row["version"] or "-", f"[red]{row['error']}[/]")
        else:
            table.add_row(row["kind"], row["name"], row["package"] or "-", row["version"] or "-",
                          row["description"])
    console.print(table)
