"""Resumable streams (issue 13): where a stream's text is kept while and after it is produced."""

from proxy.resume.base import (
    ResumeStore,
    StoredItem,
    StoredPart,
    StoredStream,
    StreamWriter,
)
from proxy.resume.memory import MemoryResumeStore
from proxy.resume.redis_store import RedisResumeStore
from proxy.settings import ResumePolicy


def open_resume_store(policy: ResumePolicy) -> ResumeStore:
    """The store PROXY_RESUME asks for: Redis with PROXY_REDIS_URL, else this process's memory."""
    if policy.redis_url:
        return RedisResumeStore.from_url(
            policy.redis_url, policy.ttl, policy.max_bytes, policy.follow_timeout
        )
    return MemoryResumeStore(policy.ttl, policy.max_bytes, policy.follow_timeout)


__all__ = [
    "MemoryResumeStore",
    "RedisResumeStore",
    "ResumeStore",
    "StoredItem",
    "StoredPart",
    "StoredStream",
    "StreamWriter",
    "open_resume_store",
]
