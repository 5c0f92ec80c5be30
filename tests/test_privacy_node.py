"""A site's DP-SGD decisions: noise for a budget, the ledger across runs, refusals, its policy."""

from pathlib import Path

import pytest

from fedllm.errors import FedllmError
from fedllm.privacy.dp import check_privacy
from fedllm.settings import RunSettings
from supernode.dp_sgd import plan_noise
from supernode.privacy_ledger import PrivacyLedger, Release, epsilon
from supernode.private_round import Refused, plan_round, spend
from supernode.site_policy import SitePolicy, allowed_metrics, load_policy

RECORDS = 1000


def private(**values: object) -> RunSettings:
    """DP-SGD over 3 rounds of one pass in logical batches of 16 (63 steps at rate 1/63)."""
    fixed = {"dp": "sgd", "num_server_rounds": 3, "dp_batch_size": 16, "dp_epochs": 1.0}
    return RunSettings(**(fixed | values))  # type: ignore[arg-type]


def run_rounds(run: RunSettings, policy: SitePolicy, ledger: PrivacyLedger, run_id: int) -> list:
    """Train every round the site accepts; the spent figures, then the refusal if any."""
    spent: list = []
    for server_round in range(1, run.num_server_rounds + 1):
        plan = plan_round(run, policy, RECORDS)
        assert plan is not None
        try:
            spent.append(spend(run, policy, ledger, run_id, server_round, plan, RECORDS))
        except Refused as err:
            spent.append(str(err))
    return spent


def test_the_noise_spends_the_budget_over_the_runs_rounds(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    spent = run_rounds(private(dp_epsilon=3.0), SitePolicy(), ledger, run_id=1)
    epsilons = [row.epsilon for row in spent]
    assert epsilons == sorted(epsilons) and 2.9 < epsilons[-1] <= 3.0 * 1.001
    assert all(row.delta == 1 / (10 * RECORDS) for row in spent)  # below 1/records
    assert len(ledger.releases(1)) == 3


def test_a_fixed_noise_stops_at_the_runs_budget(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    run = private(dp_noise=0.8, dp_epsilon=1.9)  # ε 1.40, 1.76, then 2.04
    spent = run_rounds(run, SitePolicy(), ledger, run_id=1)
    assert [isinstance(row, str) for row in spent] == [False, False, True]
    assert spent[-1].startswith("run budget spent: ε would reach 2.04 > dp-epsilon 1.9")
    assert len(ledger.releases()) == 2 and spent[1].epsilon <= 1.9


def test_the_site_budget_counts_every_run(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    policy = SitePolicy(max_epsilon=3.7)
    first = run_rounds(private(dp_epsilon=3.0), policy, ledger, run_id=1)
    assert all(not isinstance(row, str) for row in first)
    second = run_rounds(private(dp_epsilon=3.0), policy, ledger, run_id=2)  # site: 3.33, 3.62, 3.89
    assert [isinstance(row, str) for row in second] == [False, False, True]
    assert second[0].site_epsilon > 3.0 > second[0].epsilon
    assert "ε for this site's records would reach 3.89 > max-epsilon 3.7" in second[-1]
    assert epsilon(ledger.releases(), 1 / (10 * RECORDS)) <= 3.7


def test_the_accountant_is_tighter_than_rdp() -> None:
    """PRV's ε for the default plan (60 full-batch steps at ε 8) needs less noise than RDP's
    bound (4.51), and the ledger reads the plan's spend back at the budget."""
    noise = plan_noise(8.0, 1e-4, 1.0, 60)
    assert 4.0 < noise < 4.3
    releases = [Release(1, r, noise, 1.0, 20) for r in range(3)]
    assert 7.9 < epsilon(releases, 1e-4) <= 8.0


def test_a_policy_stricter_than_the_run_refuses_before_training() -> None:
    policy = SitePolicy(require_dp=True, min_noise_multiplier=2.0, max_clip_norm=0.5)
    with pytest.raises(Refused, match="requires record-level DP"):
        plan_round(RunSettings(), policy, RECORDS)
    with pytest.raises(Refused, match="dp-clip 1 above"):
        plan_round(private(dp_epsilon=3.0), policy, RECORDS)
    with pytest.raises(Refused, match="below the site's min-noise-multiplier"):
        plan_round(private(dp_epsilon=3.0, dp_clip=0.5), policy, RECORDS)
    plan = plan_round(private(dp_epsilon=0.1, dp_clip=0.5), policy, RECORDS)
    assert plan is not None and plan.noise_multiplier >= 2.0 and plan.clip == 0.5
    dtype = SitePolicy(update_dtypes=("float16",))
    with pytest.raises(Refused, match="update-dtype float32"):
        plan_round(RunSettings(), dtype, RECORDS)
    assert plan_round(RunSettings(update_dtype="float16"), dtype, RECORDS) is None


def test_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('require-dp = true\nmax-epsilon = 8.0\nmetrics = ["train-loss"]\n')
    policy = load_policy(path)
    assert policy.require_dp and policy.max_epsilon == 8.0
    metrics = {"train-loss": 0.5, "num-examples": 10, "peak-rss-bytes": 3e9}
    assert allowed_metrics(policy, metrics) == {"train-loss": 0.5, "num-examples": 10}
    assert load_policy(None) == SitePolicy()
    for text, message in [
        ("max-epsilon = -1", "'max-epsilon': Input should be greater than 0"),
        ("max-epsilom = 1", "'max-epsilom': Extra inputs"),
        ("max-epsilon = ", "not TOML"),
    ]:
        path.write_text(text)
        with pytest.raises(FedllmError, match=message):
            load_policy(path)
    with pytest.raises(FedllmError, match="No such file"):
        load_policy(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dp": "sgd"}, "needs a budget"),
        ({"dp": "sgd", "dp_epsilon": 3, "strategy": "fedprox"}, "fedprox"),
        ({"dp": "server"}, "needs dp-noise"),
        ({"dp": "client", "dp_noise": 1.0, "strategy": "krum"}, "fedavg only"),
        ({"dp_epsilon": 3}, "dp=none"),
    ],
)
def test_combinations_that_cannot_apply_are_refused(values: dict, message: str) -> None:
    with pytest.raises(FedllmError, match=message):
        check_privacy(RunSettings(**values))


def test_releases_survive_in_the_ledger_file(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "site" / "ledger.json")
    ledger.add(Release(1, 1, 1.0, 0.016, 63))
    ledger.add(Release(1, 1, 1.0, 0.016, 63))  # a retried round counts again
    again = PrivacyLedger(tmp_path / "site" / "ledger.json")
    assert len(again.releases()) == 2 and again.releases(2) == []
    assert epsilon(again.releases(), 1e-5) > epsilon(again.releases()[:1], 1e-5) > 0


@pytest.mark.parametrize("params", ["lora-b", "lora", "head"])
@pytest.mark.parametrize("noise", [0.0, 1.0])
@pytest.mark.parametrize("pooling", ["model", "stack"])
def test_dp_sgd_moves_every_weight_it_trains_and_no_other(
    demo_assets: tuple[Path, Path], params: str, noise: float, pooling: str
) -> None:
    """opacus issue #820: LoRA weights once stayed silently unchanged under DP-SGD. A mean-pooled
    head alone trains on pooled features (supernode.pooled_features): its weights move too."""
    import pandas as pd
    import torch

    from fedllm.learning.batches import encode
    from fedllm.learning.model import build_model, load_tokenizer
    from supernode.dp_sgd import DpSgd, is_trained, train_private

    model_dir, reviews = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    run = RunSettings(model=str(model_dir), pooling=pooling)
    model = build_model(run, tokenizer, torch.device("cpu"))
    with torch.no_grad():  # LoRA B starts at zero: A would get no gradient through it
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    trainable = {
        name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
    }
    table = pd.read_parquet(reviews).head(64)
    encoded = encode(list(table.text), list(table.label), tokenizer, 32)
    plan = DpSgd(noise, 1.0, 0.5, 4, 32, 0.5, params)  # type: ignore[arg-type]
    torch.manual_seed(0)  # what every ClientApp does with the run's public seed
    stats = train_private(model, encoded, int(tokenizer.pad_token_id), torch.device("cpu"), plan, 8)
    assert stats.steps == 4 and stats.examples > 0 and stats.loss > 0
    after = {name: p.detach().clone() for name, p in model.named_parameters() if name in trainable}
    moved = {name for name in trainable if not torch.equal(after[name], trainable[name])}
    chosen = {name for name in trainable if is_trained(name, params)}  # type: ignore[arg-type]
    assert chosen and moved == chosen
    assert {"lora_A" in name for name in chosen} == ({True, False} if params == "lora" else {False})
    assert all(p.requires_grad for name, p in model.named_parameters() if name in trainable)
    assert not opacus_hooks(model)


def opacus_hooks(model: object) -> list:
    """Hooks opacus left on `model`'s modules (transformers keeps its own output capture)."""
    hooks = [
        hook
        for module in model.modules()  # type: ignore[attr-defined]
        for table in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks)
        for hook in table.values()
    ]
    return [h for h in hooks if "opacus" in getattr(getattr(h, "func", h), "__module__", "")]


def test_dp_sgd_noise_is_not_replayable_from_the_seed(demo_assets: tuple[Path, Path]) -> None:
    import pandas as pd
    import torch

    from fedllm.learning.batches import encode
    from fedllm.learning.model import build_model, load_tokenizer
    from supernode.dp_sgd import DpSgd, train_private

    model_dir, reviews = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    table = pd.read_parquet(reviews).head(64)
    encoded = encode(list(table.text), list(table.label), tokenizer, 32)
    plan = DpSgd(1.0, 1.0, 0.25, 3, 16, 0.5, "lora-b")
    heads = []
    for _ in range(2):
        model = build_model(RunSettings(model=str(model_dir)), tokenizer, torch.device("cpu"))
        torch.manual_seed(0)  # the same public seed both times
        train_private(model, encoded, int(tokenizer.pad_token_id), torch.device("cpu"), plan, 8)
        heads.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n})
    assert any(not torch.equal(heads[0][name], heads[1][name]) for name in heads[0])


def test_site_level_noise_is_stated_and_refused_when_it_swamps_the_aggregate() -> None:
    from fedllm.privacy.dp import site_noise

    few = RunSettings(dp="server", dp_noise=1.0, dp_clip=2.0, min_nodes=3)
    with pytest.raises(FedllmError, match=r"norm 182 .* 91x .* dp-noise-check=false"):
        site_noise(few, 74_529)  # MiniLM's adapter: sqrt(74529) = 273
    allowed = RunSettings(dp="server", dp_noise=1.0, min_nodes=3, dp_noise_check=False)
    assert "91x the largest aggregate" in site_noise(allowed, 74_529)
    many = RunSettings(dp="client", dp_noise=0.5, min_nodes=300)
    assert "0.455x" in site_noise(many, 74_529)  # 0.5 * 273 / 300: the sites' signal shows


def test_default_passes_are_many_over_pooled_features_and_one_through_the_model() -> None:
    from supernode.private_round import private_passes

    assert private_passes(RunSettings(dp="sgd")) == 20.0  # head on layer-averaged features
    assert private_passes(RunSettings(dp="sgd", dp_params="lora-b")) == 1.0
    assert private_passes(RunSettings(dp="sgd", pooling="model")) == 1.0
    assert private_passes(RunSettings(dp="sgd", dp_params="lora-b", dp_epochs=3.0)) == 3.0
    plan = plan_round(RunSettings(dp="sgd", dp_epsilon=8.0), SitePolicy(), RECORDS)
    assert plan is not None and plan.batch_size == RECORDS and plan.sample_rate == 1.0
    assert plan.steps == 20 and plan.params == "head"
