from pai_core.search.exact import top_k

__all__ = ["top_k"]
