"""The MLflow model registry: a model directory logged as a pyfunc model, registered with its md5, the
``candidate`` alias moved to it, and the registered model loaded back and answering prompts."""

import mlflow
import mlflow.pyfunc
import pytest
import torch

from dagster_project.registry import (
    CANDIDATE,
    CHAMPION,
    Registered,
    alias_version,
    log_and_register,
    set_alias,
    version_for,
)
from ml.model.llama import Llama, ModelConfig
from ml.tokens.tokenizer import byte_tokenizer, save_tokenizer
from ml.train.weights import export_hf

CFG = ModelConfig.from_preset(
    "tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=272, max_seq_len=256
)


@pytest.fixture
def tracking(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, exp


def _model_dir(path, seed):
    torch.manual_seed(seed)
    export_hf(Llama.from_config(CFG).eval(), CFG, path)
    save_tokenizer(byte_tokenizer(16), path)
    return path


def test_registered_versions_carry_their_md5_and_candidate_follows_the_newest(tracking, tmp_path):
    uri, client, exp = tracking
    reg = Registered("test-chat")
    versions = []
    for seed, md5 in ((0, "md5-a"), (1, "md5-b")):
        run = client.create_run(exp).info.run_id
        tags = {"asset": "chat_model", "dvc_md5": md5}
        versions.append(log_and_register(uri, run, reg, _model_dir(tmp_path / f"m{seed}", seed), tags))
    assert versions == [1, 2]
    assert alias_version(uri, "test-chat", CANDIDATE) == 2
    assert alias_version(uri, "test-chat", CHAMPION) is None
    assert version_for(uri, "test-chat", "md5-a") == 1 and version_for(uri, "test-chat", "nope") is None
    set_alias(uri, "test-chat", CHAMPION, 1)
    assert alias_version(uri, "test-chat", CHAMPION) == 1
    assert client.get_model_version("test-chat", "1").tags["asset"] == "chat_model"


def test_a_registered_model_loads_with_pyfunc_and_answers_like_our_sampler(tracking, tmp_path):
    from ml.infer.sample import SampleConfig, answer_chats
    from ml.model.hf import load_hf
    from ml.tokens.tokenizer import load_tokenizer

    uri, client, exp = tracking
    run = client.create_run(exp).info.run_id
    model_dir = _model_dir(tmp_path / "m", 0)
    log_and_register(uri, run, Registered("test-base"), model_dir, {"dvc_md5": "x"})
    loaded = mlflow.pyfunc.load_model("models:/test-base@candidate")
    replies = loaded.predict(["Solve for x: 3x + 4 = 10.", "hi"], params={"max_new_tokens": 5})
    ours = answer_chats(
        load_hf(model_dir).eval(),
        load_tokenizer(model_dir),
        [[{"role": "user", "content": "Solve for x: 3x + 4 = 10."}], [{"role": "user", "content": "hi"}]],
        SampleConfig(max_new_tokens=5),
    ).texts
    assert replies == ours and len(replies) == 2
