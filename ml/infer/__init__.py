"""Inference-time model transforms: FP8 quantization (Llama 3 paper §6.2)."""
