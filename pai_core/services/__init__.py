from pai_core.services.account import AccountExport, AccountService, ForgetReport
from pai_core.services.chat import ChatService
from pai_core.services.memories import MemoryService

__all__ = ["AccountExport", "AccountService", "ChatService", "ForgetReport", "MemoryService"]
