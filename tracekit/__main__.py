"""`python -m tracekit`: the same command line as the `tracekit` script."""

from tracekit.cli.app import main

if __name__ == "__main__":
    main()
