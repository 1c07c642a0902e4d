"""model/datasets."""
