"""Known checkpoints and their download sources, where to look for them, checksummed downloads, and the
`pulse weights` service (install.py) behind the CLI."""

# How `pulse upsample` picks a checkpoint when none is named (weights/local.py does it; its --help and the
# README say it). Here, free of any import, so that the help can show it at once.
DEFAULT_ORDER = ("trained generators before the untrained demo generator; ./weights/ before the user weights "
                 "folder; StyleGAN, then StyleGAN2, then others such as the DCGAN")
