"""Command-line front end: one module per command, all over the same core."""
