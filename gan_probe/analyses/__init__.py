"""One module per command: a parameters dataclass in, a result dataclass out. No Typer, no Rich."""
