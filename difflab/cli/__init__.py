"""The command line: one module per command group; the CLI owns progress bars and flag names."""
