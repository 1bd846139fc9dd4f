"""IdleGate: background model work waits while a session holds the gate, and a turn cancels and requeues it."""

from __future__ import annotations

import asyncio

from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.idle_gate import IdleGate
from tests.doubles import FakeClock, RecordingTransport, ScriptedLlm


async def steps(n: int = 20) -> None:
    """Lets the loop run what is ready (the jobs under test wait on events, so no task ever finishes by itself)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_job_waits_while_the_gate_is_held_and_runs_once_it_is_released() -> None:
    gate = IdleGate(settle_s=0.0)
    ran: list[str] = []

    async def job() -> str:
        ran.append("job")
        return "done"

    gate.hold("s1/reply")
    waiting = asyncio.create_task(gate.run(job))
    await steps()
    assert ran == [] and not waiting.done()
    gate.hold("s1/reply")  # holding twice under one name is one hold
    gate.release("s1/reply")
    assert await waiting == "done" and ran == ["job"]


async def test_every_holder_must_release_before_a_job_runs() -> None:
    gate = IdleGate(settle_s=0.0)
    gate.hold("s1/speech")
    gate.hold("s2/reply")  # another session on the same model
    waiting = asyncio.create_task(gate.idle())
    gate.release("s1/speech")
    await steps()
    assert not waiting.done()
    gate.release("s2/reply")
    await asyncio.wait_for(waiting, 1)


async def test_a_job_running_when_a_turn_starts_is_cancelled_and_run_again_when_idle() -> None:
    gate = IdleGate(settle_s=0.0)
    started: list[int] = []
    cancelled: list[int] = []
    release = asyncio.Event()

    async def job() -> int:
        attempt = len(started) + 1
        started.append(attempt)
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(attempt)
            raise
        return attempt

    running = asyncio.create_task(gate.run(job))
    await steps()
    assert started == [1]
    gate.hold("s1/speech")  # the person starts talking: the model must be free for the reply
    await steps()
    assert cancelled == [1] and started == [1]  # stopped, and nothing new starts while held
    gate.release("s1/speech")
    await steps()
    assert started == [1, 2]
    release.set()
    assert await running == 2  # the job's result is not lost


async def test_a_failing_job_raises_to_its_caller() -> None:
    gate = IdleGate(settle_s=0.0)

    async def job() -> None:
        raise RuntimeError("model crashed")

    try:
        await gate.run(job)
    except RuntimeError as error:
        assert "model crashed" in str(error)
    else:
        raise AssertionError("the job's error was swallowed")


def test_the_gate_is_idle_only_once_the_settle_time_has_passed_since_the_last_release() -> None:
    clock = FakeClock()
    gate = IdleGate(settle_s=2.0, clock=clock)
    assert gate.quiet_for() == 0.0  # never held: idle at once
    gate.hold("s1/reply")
    assert gate.busy and gate.quiet_for() == float("inf")
    clock.now += 5
    gate.release("s1/reply")
    assert not gate.busy and gate.quiet_for() == 2.0
    clock.now += 1.5
    assert gate.quiet_for() == 0.5
    clock.now += 0.5
    assert gate.quiet_for() == 0.0
    gate.release("s1/reply")  # releasing what is not held changes nothing
    assert gate.quiet_for() == 0.0


async def test_a_session_holds_the_gate_from_a_turn_until_its_reply_is_done_and_lets_go_when_it_closes() -> None:
    gate = IdleGate(settle_s=0.0)
    llm = ScriptedLlm(["Hello", " there."])
    seen: list[bool] = []
    original = llm.stream

    def stream(messages, **kwargs):  # noqa: ANN001, ANN202 - records the gate while the reply generates
        seen.append(gate.busy)
        return original(messages, **kwargs)

    llm.stream = stream  # type: ignore[method-assign]
    session = Session(RecordingTransport(), SessionParts(llm=llm, idle=gate), PromptBuilder(persona="You are Juniper."),
                      EventLog(None), options=SessionOptions(greet=False))
    task = await session.user_said("hi")
    assert gate.busy
    assert task is not None
    await task
    assert seen == [True] and not gate.busy  # a text reply is done once generated
    session.user_speaking(True)
    assert gate.busy
    await session.close()
    assert not gate.busy  # a session that ends holds nothing
