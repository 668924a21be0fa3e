import math

import pytest

from rankwise.allocation.schedules import AllocationSchedule


def schedule(**kw):
    values = dict(steps_per_epoch=10, num_epochs=6, alpha_min=0.5, alpha_max=3.0, alpha_scheduler="linear",
                  memory_start=1000.0, memory_end=2000.0, epochs_memory_start=1, epochs_memory_start_to_end=2,
                  epochs_rank_discrete=1)
    values.update(kw)
    return AllocationSchedule(**values)


@pytest.mark.parametrize("kind", ["linear", "exponential", "cosine"])
def test_alpha_hits_end_values_at_the_last_soft_step(kind):
    s = schedule(alpha_scheduler=kind)
    last_soft = s.first_discrete_step - 1  # 49
    assert last_soft == 49
    assert s.alpha(0) == pytest.approx(0.5)
    assert s.alpha(last_soft) == pytest.approx(3.0)
    assert s.alpha(last_soft + 5) == pytest.approx(3.0)
    values = [s.alpha(t) for t in range(last_soft + 1)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_alpha_midpoints_follow_their_formula():
    mid = 49 / 2
    assert schedule().alpha(mid) == pytest.approx(1.75)
    assert schedule(alpha_scheduler="exponential").alpha(mid) == pytest.approx(math.sqrt(0.5 * 3.0))
    assert schedule(alpha_scheduler="cosine").alpha(mid) == pytest.approx(1.75)
    assert schedule(alpha_scheduler="cosine").alpha(49 / 4) == pytest.approx(0.5 + 2.5 * (1 - math.cos(math.pi / 4)) / 2)


def test_memory_holds_then_moves_linearly_then_holds():
    s = schedule()
    assert [s.memory(t) for t in (0, 9)] == [1000.0, 1000.0]
    assert s.memory(10) == 1000.0
    assert s.memory(20) == pytest.approx(1500.0)
    assert s.memory(29) == pytest.approx(1000 + 1000 * 19 / 20)
    assert s.memory(30) == 2000.0 and s.memory(59) == 2000.0


def test_constant_memory_without_schedule():
    s = schedule(memory_end=1000.0, epochs_memory_start=0, epochs_memory_start_to_end=0)
    assert {s.memory(t) for t in range(60)} == {1000.0}


def test_discrete_phase_starts_in_the_right_epoch():
    s = schedule(epochs_rank_discrete=2)
    assert not s.is_discrete(39) and s.is_discrete(40)  # epochs 4 and 5 (0-based) of 6
    assert not any(schedule(epochs_rank_discrete=0).is_discrete(t) for t in range(60))


@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_alpha_over_all_steps_follows_the_studys_scheduler(kind):
    # The adaptive LoRA-XS study adds (alpha_max - alpha_min) / (E·S) (or multiplies by (max/min)^(1/(E·S))) after
    # every step: step t uses progress t / (E·S), discrete epochs included.
    s = schedule(alpha_scheduler=kind, alpha_span="all")
    assert s.total_steps == 60
    for t in (0, 1, 30, 49, 59):
        expected = 0.5 + 2.5 * t / 60 if kind == "linear" else 0.5 * 6 ** (t / 60)
        assert s.alpha(t) == pytest.approx(expected)
    assert s.alpha(60) == pytest.approx(3.0) and s.alpha(70) == pytest.approx(3.0)
