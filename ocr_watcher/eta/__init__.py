"""Queue position and ETA of claimed jobs (docs/eta.md)."""
