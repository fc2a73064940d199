"""The ``rlaif`` command line: typer commands that wire components from the registry to
the loops. Each command module imports heavy code inside the command body."""
