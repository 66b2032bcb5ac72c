"""`vtr sample-data` (moving here from extractors/cli.py)."""
import typer


def register(root: typer.Typer) -> None:
    from extractors.cli import sample_data
    root.command("sample-data")(sample_data)
