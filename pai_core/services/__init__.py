from pai_core.services.chat import ChatService
from pai_core.services.memories import MemoryService

__all__ = ["ChatService", "MemoryService"]
