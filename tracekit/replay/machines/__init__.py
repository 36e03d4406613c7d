"""Machine descriptions shipped inside the package (read through importlib.resources)."""
