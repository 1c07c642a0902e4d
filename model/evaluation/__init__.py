"""model/evaluation."""
