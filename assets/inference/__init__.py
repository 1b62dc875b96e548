"""Inference: the FP8 model (Llama 3 paper §6.2)."""
