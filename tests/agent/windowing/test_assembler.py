from __future__ import annotations

from agent.domain import DeadLetter, Inbound, MessageRef, Reading, RejectReason
from agent.metrics import Metrics
from agent.windowing.assembler import WindowAssembler

SENSORS = ("a", "b")


def assembler(commissioned: set[str], commission_samples: int = 6) -> WindowAssembler:
    return WindowAssembler(
        sensors=SENSORS,
        window=4,
        hop=2,
        reorder_samples=2,
        gap_factor=10,
        commission_samples=commission_samples,
        commissioned=commissioned,
        metrics=Metrics(),
    )


def message(asset: str, *times: int, mid: int = 1) -> Inbound:
    readings = tuple(Reading("s", asset, ts, {"a": ts / 1000, "b": 1.0}) for ts in times)
    return Inbound(MessageRef(mid, 1, 0), 5, readings=readings)


def test_commissioned_assets_yield_windows() -> None:
    asm = assembler({"p1"})
    out = asm.process(message("p1", 1000, 2000, 3000, 4000))
    assert [w.end_ms for w in out.windows] == [4000]
    assert out.accepted.readings == message("p1", 1000, 2000, 3000, 4000).readings
    assert out.accepted.ref == MessageRef(1, 1, 0)


def test_new_asset_is_commissioned_from_its_first_samples() -> None:
    asm = assembler(set(), commission_samples=6)
    out = asm.process(message("new", *range(1000, 6000, 1000)))
    assert out.windows == () and out.requests == ()
    out = asm.process(message("new", 6000, 7000))
    assert len(out.requests) == 1
    request = out.requests[0]
    assert request.samples.shape == (6, 2)
    assert (request.first_ms, request.last_ms) == (1000, 6000)
    assert request.samples[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert asm.process(message("new", 8000)).requests == ()  # asked once only
    asm.mark_commissioned("new")
    out = asm.process(message("new", 9000, 10000))
    assert out.windows  # scored from now on


def test_late_readings_go_to_the_recorder_for_judgement() -> None:
    asm = assembler({"p1"})
    asm.process(message("p1", *range(1000, 9000, 1000)))
    out = asm.process(message("p1", 8000, 1500))
    assert out.accepted.readings == ()
    reasons = [reason for _, reason in out.accepted.late]
    assert reasons == [RejectReason.DUPLICATE, RejectReason.OUT_OF_ORDER]


def test_rejected_messages_pass_through() -> None:
    asm = assembler({"p1"})
    letter = DeadLetter(1, "t", b"x", 1, RejectReason.INVALID_JSON, "bad")
    out = asm.process(Inbound(MessageRef(3, 1, 0), 1, rejected=letter))
    assert out.accepted.rejected == letter
    assert out.windows == ()


def test_gap_restart_is_an_event() -> None:
    asm = assembler({"p1"})
    asm.process(message("p1", *range(1000, 6000, 1000)))
    out = asm.process(message("p1", 600_000))
    assert [e.kind for e in out.events] == ["window_restart"]
    assert out.events[0].asset == "p1"
