"""Campaign projection arithmetic and the `launch plan` command (no timing assertions)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from psy_agents.bench import plan as bp
from psy_agents.bench.pruning import Arm, SeedRun, compare, summarize
from psy_agents.cli.main import cli
from psy_agents.errors import ConfigError


def test_project_divides_pruned_work_over_efficient_workers():
    row = bp.project("criteria", trials=800, epochs=100, epoch_s=10.0, workers=32,
                     pruning_ratio=0.25, efficiency=0.8)
    assert row.single_gpu_s == pytest.approx(800 * 100 * 10.0)
    assert row.workers_s == pytest.approx(800_000 / (32 * 0.8))
    assert row.pruned_s == pytest.approx(800_000 * 0.25 / (32 * 0.8))


def test_project_never_beats_one_full_trial():
    row = bp.project("joint", trials=2, epochs=10, epoch_s=1.0, workers=64,
                     pruning_ratio=0.5, efficiency=1.0)
    assert row.workers_s == pytest.approx(10.0) and row.pruned_s == pytest.approx(10.0)


def test_speed_up_keeps_the_factors_apart_and_leaves_out_an_assumed_ratio():
    rows = [bp.project(a, trials=800, epochs=100, epoch_s=1.0, workers=32, pruning_ratio=0.25,
                       efficiency=0.8) for a in ("criteria", "evidence")]
    measured = bp.speed_up(rows, bp.Figure(0.25, "measured: p.json"))
    assert measured.workers == pytest.approx(32 * 0.8)
    assert measured.pruning == pytest.approx(4.0)
    assert measured.headline == pytest.approx(32 * 0.8 * 4.0)
    assert measured.campaign_s == pytest.approx(2 * 80_000 * 0.25 / 25.6)
    assumed = bp.speed_up(rows, bp.Figure(0.25, "ASSUMED", assumed=True))
    assert assumed.pruning == pytest.approx(4.0)  # shown apart, but not counted:
    assert assumed.headline == pytest.approx(32 * 0.8)
    assert assumed.campaign_s == pytest.approx(2 * 80_000 / 25.6)


def test_project_rejects_impossible_figures():
    with pytest.raises(ValueError, match="`efficiency` is 1.5"):
        bp.project("a", trials=1, epochs=1, epoch_s=1, workers=1, pruning_ratio=1,
                   efficiency=1.5)


def test_parse_epoch_seconds():
    assert bp.parse_epoch_seconds("criteria=12.5, evidence=20") == {"criteria": 12.5,
                                                                     "evidence": 20.0}
    with pytest.raises(ConfigError, match="'share' is not AGENT=SECONDS"):
        bp.parse_epoch_seconds("share")
    with pytest.raises(ConfigError, match="'joint=-1' is not"):
        bp.parse_epoch_seconds("joint=-1")


def test_pruning_compare_ratio_and_regret():
    out = compare(Arm("asha", 10, 25, 0.5946), Arm("none", 10, 100, 0.600))
    assert out["epochs_ratio"] == pytest.approx(0.25)
    assert out["regret"] == pytest.approx(0.009)
    assert out["within_1pct"] and out["epochs_at_most_30pct"]
    worse = compare(Arm("asha", 10, 40, 0.5), Arm("none", 10, 100, 0.6))
    assert not worse["within_1pct"] and not worse["epochs_at_most_30pct"]


def _write(path, payload):
    path.write_text(json.dumps(payload))
    return str(path)


def _plan(tmp_path, *extra):
    """`launch plan` of the criteria max stage (800 trials x 100 epochs) at 36 s/epoch on 10
    workers, with a measured efficiency of 0.9 and ``extra`` arguments."""
    train = _write(tmp_path / "t.json", {"kind": "bench train", "agent": "criteria",
                                         "epoch_s": 36.0})
    storage = _write(tmp_path / "s.json", {"kind": "bench storage", "efficiency": 0.9})
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(cli, ["plan", "--agent", "criteria", "--workers", "10",
                                   "--from-bench", train, "--from-bench", storage,
                                   "--backbone", "tiny", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return res.output.splitlines(), json.loads(out.read_text()), storage


def test_plan_headline_leaves_out_an_assumed_pruning_ratio(tmp_path):
    lines, data, storage = _plan(tmp_path)
    # 800 x 100 x 36 s = 33.3 d on one GPU; / (10 x 0.9) = 3.7 d; the assumed 0.30 not applied
    assert lines[1:7] == [
        "agent     trials epochs  s/epoch  1 GPU, no pruning  10 workers  s/epoch source",
        f"criteria     800    100    36.00             33.3 d       3.7 d  measured: "
        f"{tmp_path / 't.json'}",
        "total        800                             33.3 d       3.7 d",
        f"workers: 9.0x (10 workers at efficiency 0.900) [measured: {storage}]",
        "pruning: 3.33x if its epochs ratio were 0.300 [ASSUMED (not measured): the project's "
        "goal] - left out of the speed-up",
        "speed-up 9.0x over 1 GPU = workers only (measure the pruning with `launch bench "
        "pruning --out F` and pass --from-bench F)",
    ]
    assert data["total_single_gpu_s"] == pytest.approx(800 * 100 * 36.0)
    assert data["total_campaign_s"] == pytest.approx(800 * 100 * 36.0 / 9.0)
    assert data["pruning_ratio"] == {"value": 0.3, "source": "ASSUMED (not measured)",
                                     "assumed": True}
    assert data["speed_up"] == {"workers": pytest.approx(9.0), "pruning": pytest.approx(1 / 0.3),
                                "pruning_counted": False, "headline": pytest.approx(9.0)}


def _seeds_payload() -> dict:
    """What `bench pruning --seeds 3 --out` writes for epochs ratios 0.20 / 0.25 / 0.30
    (mean 0.25, std 0.05) and regrets 0 / 1 % / 2 %."""
    runs = []
    for seed, (epochs, best) in enumerate(((20, 0.6), (25, 0.594), (30, 0.588))):
        pruned, unpruned = Arm("asha", 10, epochs, best), Arm("none", 10, 100, 0.6)
        runs.append(SeedRun(seed, pruned, unpruned, compare(pruned, unpruned)))
    return {"seeds": [r.seed for r in runs], "summary": summarize(runs)}


@pytest.mark.parametrize(("payload", "source"), [
    (_seeds_payload(), ", mean of 3 seeds, std 0.050, regret +1.00%"),
    ({"epochs_ratio": 0.25, "regret": 0.004}, ""),  # one run, a file from before --seeds
], ids=["mean-over-seeds", "single-run"])
def test_plan_counts_a_measured_pruning_ratio_and_says_so(tmp_path, payload, source):
    pruning = _write(tmp_path / "p.json", {"kind": "bench pruning", **payload})
    lines, data, _ = _plan(tmp_path, "--from-bench", pruning)
    assert lines[1:3] == [
        "agent     trials epochs  s/epoch  1 GPU, no pruning  10 workers  + pruning  s/epoch "
        "source",
        f"criteria     800    100    36.00             33.3 d       3.7 d     22.2 h  measured: "
        f"{tmp_path / 't.json'}",
    ]
    assert lines[5:7] == [
        f"pruning: 4.00x (epochs ratio 0.250) [measured: {pruning}{source}]",
        "speed-up 36.0x over 1 GPU = workers 9.0x x pruning 4.00x (pruning measured)",
    ]
    assert data["total_campaign_s"] == pytest.approx(800 * 100 * 36.0 * 0.25 / 9.0)
    assert data["speed_up"]["pruning_counted"] is True


def test_plan_counts_a_pruning_ratio_given_by_flag_and_labels_it(tmp_path):
    lines, data, _ = _plan(tmp_path, "--pruning-ratio", "0.5")
    assert lines[5:7] == [
        "pruning: 2.00x (epochs ratio 0.500) [given by --pruning-ratio]",
        "speed-up 18.0x over 1 GPU = workers 9.0x x pruning 2.00x (pruning given by "
        "--pruning-ratio)",
    ]
    assert data["speed_up"]["headline"] == pytest.approx(18.0)


def test_plan_rejects_a_pruning_file_without_its_ratio(tmp_path):
    bad = _write(tmp_path / "p.json", {"kind": "bench pruning", "regret": 0.1})
    res = CliRunner().invoke(cli, ["plan", "--agent", "criteria", "--workers", "4",
                                   "--epoch-seconds", "criteria=1", "--from-bench", bad])
    assert res.exit_code == 2
    assert res.output.strip() == (f"error: {bad}: a bench pruning file without its figure "
                                  "(KeyError('epochs_ratio')) — write it again with `launch "
                                  "bench pruning --out`")


def test_plan_without_epoch_seconds_for_an_agent_is_one_clear_error():
    res = CliRunner().invoke(cli, ["plan", "--agent", "all", "--workers", "4",
                                   "--epoch-seconds", "criteria=12.5"])
    assert res.exit_code == 2
    assert "no seconds-per-epoch figure for evidence, share, joint" in res.output


def test_plan_rejects_a_file_that_is_not_a_bench_output(tmp_path):
    bad = _write(tmp_path / "x.json", {"hello": 1})
    res = CliRunner().invoke(cli, ["plan", "--agent", "criteria", "--workers", "4",
                                   "--from-bench", bad])
    assert res.exit_code == 2
    assert "not a `launch bench ... --out` file" in res.output


def test_project_disk_counts_running_trials_and_kept_models():
    disk = bp.project_disk({"criteria": 1e6, "joint": 2e6}, workers=4, trials=100,
                           models_per_study=3)
    # each running trial: the largest agent's checkpoint, twice while rewritten, + its model
    assert disk.running_trials == 4 and disk.trial_bytes == pytest.approx(2e6 * (2 * 12 + 4))
    assert disk.kept_bytes == pytest.approx(3 * (1e6 + 2e6) * 4)
    assert disk.peak_bytes == pytest.approx(4 * 2e6 * 28 + 3 * 3e6 * 4)
    few = bp.project_disk({"share": 1e6}, workers=8, trials=2, models_per_study=0)
    assert few.running_trials == 2 and few.kept_bytes == 0


def test_count_params_of_the_bundled_and_the_tiny_backbone():
    # the tiny formula is checked against a built tiny model in tests/training/test_train_keep.py
    minilm = bp.count_params("minilm")
    assert minilm.value == 22_713_216 and minilm.source.startswith("counted: ")
    tiny = bp.count_params("tiny")
    assert tiny.value == bp.tiny_params(bp.TINY_VOCAB) and tiny.source.startswith("estimate")
    assert bp.agent_params("joint", 10.0) == 20.0 and bp.agent_params("share", 10.0) == 10.0


def test_plan_projects_peak_disk_beside_wall_time(tmp_path):
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(cli, ["plan", "--agent", "all", "--workers", "16",
                                   "--epoch-seconds", "criteria=1,evidence=1,share=1,joint=1",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    disk = json.loads(out.read_text())["disk"]
    joint = 2 * 22_713_216  # two encoders; the largest agent sizes each running trial
    kept = 3 * 22_713_216 * (1 + 1 + 1 + 2) * 4  # keep_models 3 of the max stage, 4 studies
    assert disk["peak_bytes"] == pytest.approx(16 * joint * 28 + kept)
    assert disk["estimate"] and disk["backbone"] == "minilm"
    assert "peak disk 21.7 GB (ESTIMATE: 12 bytes/param per checkpoint" in res.output
    assert "kept models: 3 per study x 4 studies = 1.4 GB" in res.output


def test_plan_with_a_backbone_it_cannot_count_is_one_clear_error():
    res = CliRunner().invoke(cli, ["plan", "--agent", "criteria", "--workers", "4",
                                   "--epoch-seconds", "criteria=1", "--backbone", "org/model"])
    assert res.exit_code == 2
    assert res.output.strip() == ("error: cannot count the parameters of backbone 'org/model' "
                                  "(no local *.safetensors) — give --backbone tiny, minilm or "
                                  "a local model folder")
