"""Which revision of a Hugging Face hub model ``from_pretrained`` loaded: the commit of its snapshot in the local
cache, recorded by the commands that name a model in their outputs (``fyp-eval``'s CLIP, ``index-hdvila``'s captioner)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_revision(name: str) -> str | None:
    """The commit of a hub model's snapshot in the local cache (what ``from_pretrained`` loads); None for a local
    folder or a model not cached."""
    if Path(os.path.expanduser(name)).exists() or name.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id: not cached
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None
