"""Analyses over traces and replays: each module consumes facts and returns frames."""
