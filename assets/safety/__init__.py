"""Safety: the safety classifier and refusal detector, and the safety evaluations of a model (Llama 3 paper §5.4)."""
