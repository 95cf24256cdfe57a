from pai_core.search.exact import top_k, top_k_scores
from pai_core.search.hybrid import HybridIndex
from pai_core.search.index import AnnSettings, VectorIndex
from pai_core.search.live import IndexPolicy, LiveMemoryIndex
from pai_core.search.scan import DesignScanSearch

__all__ = [
    "AnnSettings",
    "DesignScanSearch",
    "HybridIndex",
    "IndexPolicy",
    "LiveMemoryIndex",
    "VectorIndex",
    "top_k",
    "top_k_scores",
]
