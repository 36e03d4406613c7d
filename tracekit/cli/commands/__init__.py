"""The `tracekit` commands, one module per family; importing them registers them on the app
(tracekit.cli.app imports them in the order `tracekit --help` lists them)."""
