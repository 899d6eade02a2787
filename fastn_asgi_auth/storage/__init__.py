"""State storage: one small async interface, with an in-memory backend."""

from fastn_asgi_auth.storage.base import Store
from fastn_asgi_auth.storage.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
