"""The timing model: machine descriptions, dependency graph, discrete-event replay."""
