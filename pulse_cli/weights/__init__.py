"""Known checkpoints, where to look for them, and a resumable, checksummed downloader."""
