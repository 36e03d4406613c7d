"""Regenerate every bundle in sample_traces/ and its README (definitions:
tracekit/workloads/samples.py).

    python sample_traces/regenerate.py
"""

from pathlib import Path

from tracekit.workloads.samples import write_all

if __name__ == "__main__":
    write_all(Path(__file__).resolve().parent)
