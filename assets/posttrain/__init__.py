"""Post-training rounds (Llama 3 paper §4): synthetic data, reward model, rejection sampling, SFT, DPO, chat model."""
