"""model/generation."""
