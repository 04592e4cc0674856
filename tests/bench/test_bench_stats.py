"""The benchmark arithmetic on tiny, hand-computed inputs (no timing assertions)."""

from __future__ import annotations

import pytest

from psy_agents.bench import baselines, stats
from psy_agents.bench.stats import TrialTiming


def _schedule():
    # worker 0: trial [0, 2] with 1.5 s of work, then [2, 5] with 2.5 s of work;
    # worker 1: starts at 1, one trial [1, 5] with 3 s of work.
    return [TrialTiming(0, 0.0, 2.0, 1.5), TrialTiming(0, 2.1, 5.0, 2.5),
            TrialTiming(1, 1.0, 5.0, 3.0)]


def test_efficiency_of_a_known_schedule():
    # work 7 s; available: worker 0 from 0 to 5 (5 s) + worker 1 from 1 to 5 (4 s) = 9 s
    assert stats.efficiency(_schedule()) == pytest.approx(7 / 9)


def test_overhead_counts_the_gap_since_the_previous_trial_of_the_same_worker():
    # w0: 2 - 0 - 1.5 = 0.5; 5 - 2 - 2.5 = 0.5 (the 0.1 s gap before 2.1 counts); w1: 4 - 3 = 1
    assert sorted(stats.overheads(_schedule())) == pytest.approx([0.5, 0.5, 1.0])


def test_pool_figures_combine_the_parts():
    fig = stats.pool_figures(_schedule())
    assert fig["trials"] == 3
    assert fig["span_s"] == pytest.approx(5.0)
    assert fig["trials_per_s"] == pytest.approx(0.6)
    assert fig["overhead_p50_ms"] == pytest.approx(500.0)
    assert fig["overhead_p95_ms"] == pytest.approx(950.0)  # 0.5 + 0.9 * (1.0 - 0.5)


def test_percentile_interpolates_and_rejects_bad_input():
    assert stats.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert stats.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="`values` is empty"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="`q` is 101"):
        stats.percentile([1.0], 101)


def test_barrier_waits_for_the_slowest_of_each_round():
    durations = [1.0, 4.0, 2.0, 2.0, 3.0]
    assert baselines.rounds(durations, 2) == [[1.0, 4.0], [2.0, 2.0], [3.0]]
    assert baselines.barrier_wall(durations, 2) == pytest.approx(4 + 2 + 3)
    assert baselines.barrier_wall(durations, 2, per_round_s=0.5) == pytest.approx(10.5)


def test_list_schedule_puts_each_trial_on_the_first_free_slot():
    # slots: [1, 4] -> 2 goes on slot free at 1 (ends 3) -> 2 on 3 (ends 5) -> 3 on 4 (ends 7)
    assert baselines.list_schedule([1.0, 4.0, 2.0, 2.0, 3.0], 2) == pytest.approx(7.0)
    # a cold start of 1 s per trial: [2, 5] -> 3 on 2 (5) -> 3 on 5 (8) -> 4 on 5 (9)
    assert baselines.list_schedule([1.0, 4.0, 2.0, 2.0, 3.0], 2, per_trial_s=1.0) == \
        pytest.approx(9.0)
    with pytest.raises(ValueError, match="`n_workers` is 0"):
        baselines.list_schedule([1.0], 0)


def test_compare_gives_ratios_against_both_baselines():
    out = baselines.compare([1.0, 4.0, 2.0, 2.0, 3.0], 2, ours_span_s=6.0, overhead_s=0.0,
                            cold_start_s=1.0)
    assert out["barrier_computed_s"] == pytest.approx(9.0)
    assert out["ratio_vs_barrier"] == pytest.approx(9.0 / 6.0)
    assert out["ratio_vs_process_per_trial"] == pytest.approx(9.0 / 6.0)
    assert out["barrier_efficiency"] == pytest.approx(12.0 / 18.0)
    measured = baselines.compare([1.0, 4.0], 2, ours_span_s=4.0, overhead_s=0.0,
                                 cold_start_s=0.0, measured_barrier_s=5.0)
    assert measured["ratio_vs_barrier"] == pytest.approx(1.25)
    assert measured["barrier_basis"].startswith("measured")


def test_measure_barrier_sleeps_round_by_round():
    # two rounds whose slowest trials sleep 0.05 s each: at least 0.1 s of wall
    assert baselines.measure_barrier([0.05, 0.01, 0.05], 2) >= 0.1
