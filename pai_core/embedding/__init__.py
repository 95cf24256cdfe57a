from pai_core.embedding.onnx_embedder import OnnxEmbedder, l2_normalize, mean_pool

__all__ = ["OnnxEmbedder", "l2_normalize", "mean_pool"]
