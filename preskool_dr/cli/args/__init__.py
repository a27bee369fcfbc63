"""The command line's parsers, one module per command: options, help and examples only.
Building the parser (for `--help`, completion, or to dispatch) imports these and nothing
of the commands themselves; `lazy` imports a command's module when it runs."""
