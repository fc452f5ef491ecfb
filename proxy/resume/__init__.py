"""Resumable streams (issue 13): where a stream's text is kept while and after it is produced."""

from proxy.resume.base import (
    ResumeStore,
    StoredItem,
    StoredStream,
    StoredText,
    StreamWriter,
)
from proxy.resume.memory import MemoryResumeStore
from proxy.resume.redis_store import RedisResumeStore
from proxy.settings import Settings

# A producer writes at least every PROXY_IDLE_TIMEOUT (or fails, which is written too); a
# reader that hears nothing for this much longer concludes its producer died.
FOLLOW_MARGIN = 5.0


def follow_timeout(settings: Settings) -> float:
    return settings.idle_timeout + FOLLOW_MARGIN


def open_resume_store(settings: Settings) -> ResumeStore:
    """The store PROXY_RESUME asks for: Redis with PROXY_REDIS_URL, else this process's memory."""
    if settings.redis_url:
        return RedisResumeStore.from_url(
            settings.redis_url,
            settings.resume_ttl,
            settings.resume_max_bytes,
            follow_timeout(settings),
        )
    return MemoryResumeStore(
        settings.resume_ttl, settings.resume_max_bytes, follow_timeout(settings)
    )


__all__ = [
    "MemoryResumeStore",
    "RedisResumeStore",
    "ResumeStore",
    "StoredItem",
    "StoredStream",
    "StoredText",
    "StreamWriter",
    "follow_timeout",
    "open_resume_store",
]
