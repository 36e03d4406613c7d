"""The `tracekit` command line."""
