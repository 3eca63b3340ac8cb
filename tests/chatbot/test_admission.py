"""New chat sockets past CHAT_CONNECTS_PENDING_MAX are accepted and closed with 1013
(chatbot.admission); those under it reach the application, and a slot is given back when a
set-up ends: the welcome sent, the socket closed or gone, the application failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chatbot import closecodes
from chatbot.admission import ConnectAdmission
from tests.chatbot.ws_client import WAIT, closed_with, db, hello, routes
from tests.factories import make_bot

CHAT = "/ws/chat/some-key/"


class Gated:
    """A stand-in chat application: each socket waits at its gate, then does what the gate
    was opened with: accept and welcome, accept and close, fail, or listen until the
    visitor leaves."""

    def __init__(self) -> None:
        self.entered: asyncio.Queue[asyncio.Future[str]] = asyncio.Queue()
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        assert (await receive())["type"] == "websocket.connect"
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self.entered.put(gate)
        then = await gate
        if then == "listen":  # until the visitor leaves, as a consumer does
            while (await receive())["type"] != "websocket.disconnect":
                pass
            return
        if then == "fail":
            raise RuntimeError("the database is down")
        await send({"type": "websocket.accept"})
        if then == "close":
            await send({"type": "websocket.close", "code": closecodes.UNKNOWN_BOT})
            return
        await send({"type": "websocket.send", "text": '{"type": "welcome"}'})
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def waiting(admission: ConnectAdmission, app: Gated, path: str = CHAT) -> tuple[Any, Any]:
    """A socket that has reached the stand-in and waits at its gate: (communicator, gate).
    Keep the communicator: the event loop holds its task weakly, and a collected one ends."""
    comm = WebsocketCommunicator(admission, path)
    await comm.send_input({"type": "websocket.connect"})
    return comm, await asyncio.wait_for(app.entered.get(), WAIT)


async def test_it_sheds_with_1013_past_the_bound_without_reaching_the_application() -> None:
    app = Gated()
    admission = ConnectAdmission(app, limit=2)
    held = [await waiting(admission, app), await waiting(admission, app)]
    assert admission.pending == 2

    comm = WebsocketCommunicator(admission, CHAT)
    assert (await comm.connect(timeout=WAIT))[0] is True  # accepted, so a browser sees the code
    assert await closed_with(comm) == closecodes.TRY_AGAIN_LATER
    assert app.calls == 2
    assert admission.shed_total == 1 and admission.pending == 2
    assert len(held) == 2


async def test_it_lets_sockets_through_under_the_bound_and_again_once_one_is_welcomed() -> None:
    app = Gated()
    admission = ConnectAdmission(app, limit=2)
    first, gate = await waiting(admission, app)
    held = [await waiting(admission, app)]

    gate.set_result("welcome")
    assert await first.receive_output(timeout=WAIT) == {"type": "websocket.accept"}
    assert (await first.receive_from(timeout=WAIT)) == '{"type": "welcome"}'
    assert admission.pending == 1  # its set-up is over, its socket stays open

    held.append(await waiting(admission, app))  # reaches the application
    assert app.calls == 3 and admission.shed_total == 0 and admission.pending == 2


@pytest.mark.parametrize("ending", ["close", "fail", "disconnect"])
async def test_it_counts_down_when_a_set_up_ends_without_a_welcome(ending: str) -> None:
    app = Gated()
    admission = ConnectAdmission(app, limit=1)
    comm, gate = await waiting(admission, app)

    if ending == "disconnect":  # the visitor left during the set-up
        gate.set_result("listen")
        await comm.send_input({"type": "websocket.disconnect", "code": 1001})
        await comm.wait(timeout=WAIT)
    elif ending == "close":  # refused by the application (say an unknown bot)
        gate.set_result("close")
        await comm.receive_output(timeout=WAIT)
        assert await closed_with(comm) == closecodes.UNKNOWN_BOT
    else:
        gate.set_result("fail")
        with pytest.raises(RuntimeError):
            await comm.wait(timeout=WAIT)
    assert admission.pending == 0

    await waiting(admission, app)  # the slot is free again
    assert app.calls == 2 and admission.shed_total == 0


async def test_it_stops_counting_a_socket_that_never_says_hello_after_the_ceiling() -> None:
    app = Gated()
    admission = ConnectAdmission(app, limit=1, ceiling=0)
    idle = await waiting(admission, app)  # connected, never answered
    await asyncio.sleep(0)  # a timer of 0 s is due by the loop's next turn
    assert admission.pending == 0
    held = await waiting(admission, app)
    assert app.calls == 2 and admission.shed_total == 0
    assert idle and held


@pytest.mark.parametrize("path", ["/ws/agent/", "/ws/other/"])
async def test_other_sockets_pass_through_uncounted(path: str) -> None:
    app = Gated()
    admission = ConnectAdmission(app, limit=1)
    held = [await waiting(admission, app), await waiting(admission, app, path)]
    assert app.calls == 2 and admission.pending == 1 and admission.shed_total == 0
    assert len(held) == 2


async def test_a_limit_of_zero_admits_everything() -> None:
    app = Gated()
    admission = ConnectAdmission(app, limit=0)
    for _ in range(3):
        await waiting(admission, app)
    assert app.calls == 3 and admission.shed_total == 0


@pytest.mark.django_db(transaction=True)
async def test_the_real_chat_socket_gives_its_slot_back_at_the_welcome() -> None:
    bot = await db(make_bot)
    admission = ConnectAdmission(routes(), limit=1)
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    comm = WebsocketCommunicator(admission, f"/ws/chat/{bot.public_key}/", headers=headers)
    assert (await comm.connect(timeout=WAIT))[0] is True
    assert admission.pending == 1  # accepted, still being set up until its hello is answered

    late = WebsocketCommunicator(admission, f"/ws/chat/{bot.public_key}/", headers=headers)
    await late.connect(timeout=WAIT)
    assert await closed_with(late) == closecodes.TRY_AGAIN_LATER

    await hello(comm)
    assert admission.pending == 0
    again = WebsocketCommunicator(admission, f"/ws/chat/{bot.public_key}/", headers=headers)
    assert (await again.connect(timeout=WAIT))[0] is True
    await hello(again)
    await comm.disconnect(timeout=WAIT)
    await again.disconnect(timeout=WAIT)
