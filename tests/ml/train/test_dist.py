"""ml/train/dist.py: compile scopes (which graph torch.compile captures) and their resolution per world size."""

import pytest
import torch

from ml.config import ConfigError
from ml.model.llama import Llama, ModelConfig
from ml.train.config import TrainConfig
from ml.train.dist import apply_compile, compile_scope

torch.set_num_threads(1)


def test_compile_scope_resolution():
    assert compile_scope("auto", 1) == "model"
    assert compile_scope("auto", 8) == "blocks"
    assert compile_scope("blocks", 1) == "blocks"
    assert compile_scope("model", 1) == "model"
    with pytest.raises(ValueError, match="'model' needs one process, got world size 2"):
        compile_scope("model", 2)
    with pytest.raises(ConfigError, match="compile_scope must be auto | blocks | model, got 'layers'"):
        TrainConfig.from_dict({"compile_scope": "layers"})


@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_compiled_scope_equals_eager_and_keeps_names(scope):
    """Captured graphs (aot_eager: dynamo + autograd tracing, no codegen) give eager's loss, grads, eval loss."""
    cfg = ModelConfig.from_preset("tiny")
    torch.manual_seed(0)
    model, ref = Llama.from_config(cfg), Llama.from_config(cfg)
    ref.load_state_dict(model.state_dict())
    apply_compile(model, scope, backend="aot_eager")
    assert list(model.state_dict()) == list(ref.state_dict())  # checkpoints stay portable
    g = torch.Generator().manual_seed(1)
    tokens, labels = (
        torch.randint(0, 4096, (2, 64), generator=g),
        torch.randint(0, 4096, (2, 64), generator=g),
    )
    doc_ids = torch.tensor([[0] * 30 + [1] * 34, [0] * 64])
    loss, want = model(tokens, doc_ids=doc_ids, labels=labels), ref(tokens, doc_ids=doc_ids, labels=labels)
    loss.backward()
    want.backward()
    assert torch.allclose(loss, want, rtol=0, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), name
    with torch.no_grad():  # the eval path (no autograd) captures too
        assert torch.allclose(model(tokens, doc_ids=doc_ids, labels=labels), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="scope must be blocks | model"):
        apply_compile(ref, "layers")
