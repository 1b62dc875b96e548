"""DPO: the loss by hand (masking and NLL term), formatting tokens masked, reference scored once, TRL agreement."""

from __future__ import annotations

import math

import pytest
import torch
from posttrain_helpers import BOS, EOT, ONE, b, config, preference_records, tiny_hf_model, write_data

from ml.model.llama import IGNORE_INDEX
from ml.tokens.chat import encode_chat_masked
from ml.tokens.tokenizer import byte_tokenizer
from ml.train.tasks.dpo import REFERENCE_LOGPS, DPOTask, dpo_objective, save_reference_logps, sequence_logps
from ml.train.weights import frozen_model


def test_dpo_objective_by_hand():
    # one pair, vocab 2; chosen logits (0, ln 3) -> p = (1/4, 3/4); rejected logits 0 -> p = (1/2, 1/2)
    chosen = torch.tensor([[0.0, math.log(3)]] * 3)
    rejected = torch.zeros(3, 2)
    logits = torch.stack([chosen, rejected])  # (2, 3, 2)
    labels = torch.tensor([[IGNORE_INDEX, 1, 0], [0, IGNORE_INDEX, 1]])  # masked tokens never count
    ref = torch.tensor([math.log(1 / 4), math.log(1 / 4)])
    loss, parts = dpo_objective(logits, labels, ref, beta=0.1, nll_coef=0.2)
    # policy: chosen log(3/4) + log(1/4) = log(3/16), rejected 2 log(1/2) = log(1/4)
    margin = (math.log(3 / 16) - math.log(1 / 4)) - (math.log(1 / 4) - math.log(1 / 4))  # log(3/4)
    dpo = math.log(1 + math.exp(-0.1 * margin))  # -log sigmoid(0.1 log(3/4)) = log(1 + (4/3)^0.1)
    nll = -math.log(3 / 16) / 2  # mean over the 2 scored chosen tokens
    assert parts["dpo_loss"].item() == pytest.approx(dpo, abs=1e-6)
    assert parts["nll_chosen"].item() == pytest.approx(nll, abs=1e-6)
    assert loss.item() == pytest.approx(dpo + 0.2 * nll, abs=1e-6)
    assert loss.item() == pytest.approx(0.8750323, abs=1e-6)
    assert parts["reward_accuracy"].item() == 0.0  # margin log(3/4) < 0


@pytest.fixture()
def dpo_setup(tmp_path):
    model, hf_dir = tiny_hf_model(tmp_path / "hf")
    data = write_data(tmp_path / "data", preference_records(6), preference_records(2, prefix="v"))
    task = DPOTask(config(task="dpo", init_from=str(hf_dir)), data, ONE)
    return model, hf_dir, task


def test_formatting_tokens_are_masked(dpo_setup):
    _, _, task = dpo_setup
    inputs, labels = task.examples["train"][1]["chosen"]  # "1+1?" -> "It is 2."
    prompt = [BOS, 262, *b("user"), 263, *b("\n\n1+1?"), EOT, 262, *b("assistant"), 263, *b("\n\n")]
    assert inputs == [*prompt, *b("It is 2.")]  # the closing eot is the last target position's label only
    assert labels == [IGNORE_INDEX] * (len(prompt) - 1) + b("It is 2.") + [IGNORE_INDEX]  # eot masked


def test_reference_scored_once_and_cached(dpo_setup):
    _, hf_dir, task = dpo_setup
    reference = frozen_model(hf_dir, torch.device("cpu"))
    calls = []
    reference.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    task.bind_frozen({"reference": reference})
    assert calls == [4, 4, 4, 4]  # 3 train batches of 2 pairs + 1 val batch, [chosen; rejected] rows
    batch = task.next_batch()
    for _ in range(5):
        task.next_batch()
    assert len(calls) == 4  # training never runs the reference again
    with torch.no_grad():
        expect = sequence_logps(reference(batch["inputs"]), batch["labels"])
    torch.testing.assert_close(batch["ref_logps"], expect)


def test_cached_reference_logps_replace_the_reference(dpo_setup, tmp_path):
    """Scored once and saved, the reference log-probs are read back by a new task on the same data, which
    then asks for no reference model; a cache of another data set is refused naming the split."""
    _, hf_dir, task = dpo_setup
    data = tmp_path / "data"  # dpo_setup's data directory
    assert task.frozen_models() == {"reference": str(hf_dir)}
    task.bind_frozen({"reference": frozen_model(hf_dir, torch.device("cpu"))})
    save_reference_logps(task, data / REFERENCE_LOGPS)
    again = DPOTask(config(task="dpo", init_from=str(hf_dir)), data, ONE)
    assert again.frozen_models() == {}
    again.bind_frozen({})
    assert {s: tuple(r.shape) for s, r in again.ref.items()} == {"train": (6, 2), "val": (2, 2)}
    for split in ("train", "val"):
        assert torch.equal(again.ref[split], task.ref[split])
    write_data(data, preference_records(4), preference_records(2, prefix="v"))  # 4 train pairs now
    with pytest.raises(ValueError, match="split 'train' has 6 reference log-probs for 4 pairs"):
        DPOTask(config(task="dpo", init_from=str(hf_dir)), data, ONE)


def test_malformed_preference_record_is_named(tmp_path):
    from ml.posttrain.records import RecordError

    bad = preference_records(3)
    del bad[1]["chosen"]
    data = write_data(tmp_path, bad, preference_records(1, prefix="v"))
    with pytest.raises(RecordError, match=r"train.jsonl:2 \(id 'p1'\): missing 'chosen' response"):
        DPOTask(config(task="dpo", init_from="x"), data, ONE)


def _trl_example(record: dict, tok) -> dict:
    """Our DPO scoring as TRL's pre-tokenized example: prompt ids, then the scored (content) ids."""
    out = {}
    for field in ("chosen", "rejected"):
        enc = encode_chat_masked([*record["prompt"], {"role": "assistant", "content": record[field]}], tok)
        first = enc.content.index(True)
        n = sum(enc.content)
        assert enc.content[first : first + n] == [True] * n and enc.ids[first + n :] == [EOT]
        out["prompt_ids"] = enc.ids[:first]
        out[f"{field}_ids"] = enc.ids[first : first + n]
    return out


def test_loss_and_grads_equal_trl(dpo_setup, tmp_path):
    transformers = pytest.importorskip("transformers")
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    model, hf_dir, task = dpo_setup
    task.bind_frozen({"reference": frozen_model(hf_dir, torch.device("cpu"))})
    records = preference_records(2)
    batch = task.collate("train", [0, 1])
    loss, _ = dpo_objective(model(batch["inputs"]), batch["labels"], batch["ref_logps"], 0.1, 0.2)
    loss.backward()

    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir)
    ref = transformers.LlamaForCausalLM.from_pretrained(hf_dir)
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=byte_tokenizer(16), pad_token="<|finetune_right_pad_id|>", eos_token="<|eot_id|>"
    )
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.1,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, 0.2],
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        max_length=None,
    )
    dummy = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    trainer = trl.DPOTrainer(model=hf, ref_model=ref, args=args, train_dataset=dummy, processing_class=hf_tok)
    trl_batch = trainer.data_collator([_trl_example(r, byte_tokenizer(16)) for r in records])
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    trl_loss.backward()

    assert abs(loss.item() - trl_loss.item()) < 1e-5
    ours = dict(model.named_parameters())
    diffs = {
        name: (p.grad - ours[name.removeprefix("model.")].grad).abs().max().item()
        for name, p in trainer.model.named_parameters()
    }
    assert len(diffs) == len(ours) and max(diffs.values()) < 1e-5
    print(
        f"TRL agreement: |loss diff| = {abs(loss.item() - trl_loss.item()):.3e}, max |grad diff| = {max(diffs.values()):.3e}"
    )


def test_dpo_trains_through_the_engine(tmp_path):
    from ml.train.engine import Trainer

    torch.set_num_threads(1)
    _, hf_dir = tiny_hf_model(tmp_path / "hf")
    data = write_data(tmp_path / "d", preference_records(12), preference_records(4, prefix="v"))
    cfg = config(
        task="dpo", init_from=str(hf_dir), steps=15, optimizer=dict(lr=1e-2), data=dict(batch_size=4)
    )
    trainer = Trainer(cfg, DPOTask(cfg, data, ONE), tmp_path / "out", ONE)
    trainer.build()  # binds the reference: init_from, frozen
    trainer.init_from(cfg.init_from)
    before = trainer.evaluate()
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    for _ in range(15):
        trainer.train_step()
    after = trainer.evaluate()
    assert after["reward_accuracy"] == 1.0 and after["reward_margin"] > 0.5, after
    assert after["nll_chosen"] < before["nll_chosen"]


def test_dpo_run_exports_and_resumes_exactly(tmp_path):
    from train_helpers import copy_checkpoint

    from ml.train.engine import train

    torch.set_num_threads(1)
    _, hf_dir = tiny_hf_model(tmp_path / "hf")
    data = write_data(tmp_path / "d", preference_records(8), preference_records(2, prefix="v"))
    cfg = config(task="dpo", init_from=str(hf_dir), steps=6, ckpt_every=2, deterministic=True)
    whole = train(cfg, data, tmp_path / "whole")
    resumed = train(cfg, data, copy_checkpoint(tmp_path / "whole", 4, tmp_path / "split").parents[1])
    assert resumed.start_step == 4 and resumed.losses == whole.losses[4:]  # reference re-scored, same values
    assert (whole.hf_dir / "model.safetensors").is_file()
