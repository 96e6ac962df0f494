"""Known checkpoints and their download sources, where to look for them, checksummed downloads, and the
`pulse weights` service (install.py) behind the CLI."""
