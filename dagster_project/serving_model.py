"""The pyfunc model every registered model version is logged with (MLflow "models from code": this file is
copied into the logged model and runs when it is loaded; the project's ``ml`` package must be importable).

``mlflow.pyfunc.load_model("models:/llama-lifecycle-chat@champion").predict(["Hi"])`` -> greedy replies in
the Llama 3 chat format. ``model_config``: ``flavor`` (``hf`` HF Llama weights, ``fp8`` the FP8 format of
ml/infer/fp8_model.py). Params: ``max_new_tokens`` (default 64).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc


class LlamaChatModel(mlflow.pyfunc.PythonModel):
    """A list of user prompts (or a one-column DataFrame of them) -> the model's greedy replies."""

    def load_context(self, context) -> None:
        from ml.tokens.tokenizer import load_tokenizer

        path = Path(context.artifacts["model"])
        if (context.model_config or {}).get("flavor") == "fp8":
            from ml.infer.fp8_model import load_fp8

            self.model = load_fp8(path)
        else:
            from ml.model.hf import load_hf

            self.model = load_hf(path).eval()
        self.tok = load_tokenizer(path)

    def predict(self, context, model_input, params: dict[str, Any] | None = None):  # signature: registry.py
        from ml.infer.sample import SampleConfig, answer_chats

        # the signature (a column of strings) hands a list over as a one-column DataFrame
        prompts = model_input.iloc[:, 0].tolist() if hasattr(model_input, "iloc") else list(model_input)
        cfg = SampleConfig(max_new_tokens=int((params or {}).get("max_new_tokens", 64)), temperature=0.0)
        chats = [[{"role": "user", "content": str(p)}] for p in prompts]
        return answer_chats(self.model, self.tok, chats, cfg).texts


mlflow.models.set_model(LlamaChatModel())
