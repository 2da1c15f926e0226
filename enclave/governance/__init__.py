"""Four-eyes approval and incident controls (``docs/governance.md``)."""
