"""Champion promotion decisions on fixed version records."""

from ml.eval.promotion import ChatPromotionConfig, PromotionConfig, decide


def rec(version, status, md5=None, reason=""):
    r = {"version": version, "status": status, "reason": reason}
    if md5 is not None:
        r["inputs"] = {"chat_model": {"version": "v", "md5": md5}}
    return r


def test_the_newest_evaluation_of_this_version_decides():
    cfg = ChatPromotionConfig()
    records = {"chat_safety_evals": [rec("v1", "superseded", "aaa"), rec("v2", "current", "bbb")]}
    table = decide(cfg, "chat_model", "bbb", records)
    assert table["ok"].tolist() == [True]
    assert table.loc[0, "version"] == "v2"
    # a later evaluation of the same model version that failed (a regression) blocks it
    records["chat_safety_evals"].append(rec("v3", "failed", "bbb", "blocking check(s) failed: no_regression"))
    table = decide(cfg, "chat_model", "bbb", records)
    assert table["ok"].tolist() == [False]
    assert table.loc[0, "reason"] == (
        "chat_safety_evals v3 evaluated it and failed: blocking check(s) failed: no_regression"
    )


def test_an_evaluation_of_another_version_does_not_count():
    table = decide(
        ChatPromotionConfig(), "chat_model", "ccc", {"chat_safety_evals": [rec("v1", "current", "bbb")]}
    )
    assert not table.loc[0, "ok"]
    assert table.loc[0, "reason"] == "chat_safety_evals never evaluated chat_model ccc"
    # records written before versions kept their inputs do not count either
    table = decide(ChatPromotionConfig(), "chat_model", "bbb", {"chat_safety_evals": [rec("v0", "current")]})
    assert not table.loc[0, "ok"]


def test_pending_versions_are_ignored_and_passing_requirements_read_the_newest():
    cfg = PromotionConfig(evaluations=(), passing=("scaling_flagship",))
    records = {
        "scaling_flagship": [
            rec("v1", "failed", reason="forecast off by 12%"),
            rec("v2", "current"),
            rec("v3", "pending"),
        ]
    }
    assert decide(cfg, "base_model", "x", records)["ok"].tolist() == [True]
    records["scaling_flagship"].append(rec("v4", "failed", reason="forecast off by 12%"))
    table = decide(cfg, "base_model", "x", records)
    assert table.loc[0, "reason"] == "scaling_flagship v4 failed: forecast off by 12%"
    assert decide(cfg, "base_model", "x", {})["reason"].tolist() == ["scaling_flagship has no version"]


def test_base_promotion_requires_evals_safety_fp8_and_the_forecast():
    cfg = PromotionConfig()
    assert cfg.evaluations == ("base_model_evals", "safety_evals", "fp8_model")
    assert cfg.passing == ("scaling_flagship",)
    table = decide(cfg, "base_model", "m", {})
    assert table["asset"].tolist() == ["base_model_evals", "safety_evals", "fp8_model", "scaling_flagship"]
    assert not table["ok"].any()
