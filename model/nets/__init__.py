"""model/nets."""
