"""Safety data, violation and false-refusal metrics (Llama 3 paper §5.4)."""
