"""Whether the Hugging Face hub can be reached, asked by both model loading and data reading
(a foundation module: it imports nothing of retain, docs/architecture.md)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached, found without the 50 s of retries a download attempt makes
    offline (None: it may be reachable)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy resolves names for us
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"the hub ({host}) cannot be reached: {exc}"
    return None
