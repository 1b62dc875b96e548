"""Which model the model-reading stages (safety evaluations, FP8) take as their input: one place to re-point
when a later stage (the annealed base model, the chat model of a post-training round) becomes the one to
evaluate and serve. A stage declares ``ins=evaluated_model_in()`` and a parameter ``model: HFCheckpoint``."""

import dagster as dg

EVALUATED_MODEL = "base_model"


def evaluated_model_in() -> dict[str, dg.AssetIn]:
    return {"model": dg.AssetIn(key=dg.AssetKey(EVALUATED_MODEL))}
