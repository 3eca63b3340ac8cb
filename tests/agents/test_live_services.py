"""Live handoff services without a socket: agents.live (the agents' side) and
chatbot.handoff (the visitor's side), including two agents taking one conversation at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from agents import live
from agents.models import Presence
from chatbot import handoff
from chatbot.models import Conversation, Message, Visitor
from chatbot.selectors import agents_online, handoff_state
from tests.agents.conftest import make_user
from tests.factories import make_bot, make_conversation, make_message

WAITING, WITH_AGENT = "waiting_for_agent", "with_agent"


def online(user: Any, seconds_ago: float = 0) -> None:
    Presence.objects.update_or_create(
        user=user, defaults={"last_seen": timezone.now() - timedelta(seconds=seconds_ago)}
    )


def notices(conversation: Conversation) -> list[str]:
    return list(conversation.messages.filter(role="system").order_by("id").values_list("text", flat=True))


# --- Two agents, one conversation -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_agents_taking_at_once_win(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    conversation = make_conversation(bot, status=WAITING)
    ann = make_user("ann", staff=True)
    bob = make_user("bob", agent=True)
    # Hold the winner's transaction open a moment: the other take must wait for it (the row
    # lock; SQLite's IMMEDIATE transaction) and then see the conversation taken.
    real = live.conversation_set_status

    def slow_set_status(**kwargs: Any) -> Conversation:
        result = real(**kwargs)
        time.sleep(0.3)
        return result

    monkeypatch.setattr(live, "conversation_set_status", slow_set_status)
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def take(agent: Any) -> None:
        start.wait()
        try:
            results[agent.username] = live.conversation_take(agent=agent, conversation_id=conversation.pk)
        except live.LiveError as err:
            results[agent.username] = err
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(agent,)) for agent in (ann, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    winners = [name for name, result in results.items() if isinstance(result, live.Change)]
    losers = [name for name, result in results.items() if isinstance(result, live.Taken)]
    assert len(winners) == 1 and len(losers) == 1, results
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_agent.username) == (WITH_AGENT, winners[0])
    assert notices(conversation) == [f"{winners[0]} joined the conversation."]


@pytest.mark.django_db
def test_it_refuses_a_second_agent_and_lets_the_first_take_again_without_a_new_notice() -> None:
    conversation = make_conversation(status=WAITING)
    ann, bob = make_user("ann", staff=True), make_user("bob", staff=True)
    first = live.conversation_take(agent=ann, conversation_id=conversation.pk)
    assert first.notice is not None and first.agent == "ann"
    with pytest.raises(live.Taken):
        live.conversation_take(agent=bob, conversation_id=conversation.pk)
    again = live.conversation_take(agent=ann, conversation_id=conversation.pk)
    assert again.notice is None
    assert notices(conversation) == ["ann joined the conversation."]


@pytest.mark.django_db
def test_it_lets_an_agent_take_an_open_conversation_but_not_a_closed_one() -> None:
    ann = make_user("ann", staff=True)
    opened = make_conversation(status="open")
    closed = make_conversation(opened.bot, status="closed")
    live.conversation_take(agent=ann, conversation_id=opened.pk)
    assert Conversation.objects.get(pk=opened.pk).status == WITH_AGENT
    with pytest.raises(live.BadState):
        live.conversation_take(agent=ann, conversation_id=closed.pk)


@pytest.mark.django_db
def test_an_agent_of_another_bot_finds_nothing() -> None:
    shop, other = make_bot(name="Shop"), make_bot(name="Other")
    conversation = make_conversation(shop, status=WAITING)
    carol = make_user("carol", agent=True, bots=[other])
    for action in (live.conversation_take, live.conversation_release, live.conversation_close):
        with pytest.raises(live.NotFound):
            action(agent=carol, conversation_id=conversation.pk)
    with pytest.raises(live.NotFound):
        live.agent_message_store(agent=carol, conversation_id=conversation.pk, text="hi")
    with pytest.raises(live.NotFound):
        live.agent_conversation(agent=carol, conversation_id=conversation.pk)
    assert live.agent_lists(agent=carol) == ([], [])
    assert Conversation.objects.get(pk=conversation.pk).status == WAITING


@pytest.mark.django_db
def test_only_the_agent_who_took_it_may_write_hand_back_or_close() -> None:
    conversation = make_conversation(status=WAITING)
    ann, bob = make_user("ann", staff=True), make_user("bob", staff=True)
    live.conversation_take(agent=ann, conversation_id=conversation.pk)
    for action in (live.conversation_release, live.conversation_close):
        with pytest.raises(live.Forbidden):
            action(agent=bob, conversation_id=conversation.pk)
    with pytest.raises(live.Forbidden):
        live.agent_message_store(agent=bob, conversation_id=conversation.pk, text="hi")
    with pytest.raises(live.Forbidden):
        live.agent_assigned_check(agent=bob, conversation_id=conversation.pk)
    assert not Message.objects.filter(role="agent").exists()

    message = live.agent_message_store(agent=ann, conversation_id=conversation.pk, text="Hello, Ann here.")
    assert (message.role, message.source, message.author_id) == ("agent", "agent", ann.pk)
    change = live.conversation_release(agent=ann, conversation_id=conversation.pk)
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_agent_id) == ("open", None)
    assert (
        change.notice is not None
        and change.notice.text == "ann handed the conversation back to the assistant."
    )
    with pytest.raises(live.Forbidden):  # handed back: nobody has it now
        live.agent_message_store(agent=ann, conversation_id=conversation.pk, text="still there?")


@pytest.mark.django_db
def test_any_agent_may_close_a_waiting_conversation_but_not_an_open_one() -> None:
    waiting = make_conversation(status=WAITING)
    opened = make_conversation(waiting.bot, status="open")
    bob = make_user("bob", staff=True)
    live.conversation_close(agent=bob, conversation_id=waiting.pk)
    assert Conversation.objects.get(pk=waiting.pk).status == "closed"
    assert notices(waiting) == ["bob closed the conversation."]
    with pytest.raises(live.BadState):
        live.conversation_close(agent=bob, conversation_id=opened.pk)
    with pytest.raises(live.BadState):
        live.conversation_close(agent=bob, conversation_id=waiting.pk)  # closed already


# --- Presence ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_agents_online_counts_recent_agents_who_see_the_bot(settings: Any) -> None:
    settings.AGENT_ONLINE_SECONDS = 60
    shop, other = make_bot(name="Shop"), make_bot(name="Other")
    assert agents_online(bot_id=shop.pk) is False
    online(make_user("visitor-ish"))  # signed in, not an agent
    online(make_user("stale", staff=True), seconds_ago=61)
    online(make_user("elsewhere", agent=True, bots=[other]))
    gone = make_user("gone", staff=True)
    gone.is_active = False
    gone.save()
    online(gone)
    assert agents_online(bot_id=shop.pk) is False
    assert agents_online(bot_id=other.pk) is True

    online(make_user("assigned", agent=True, bots=[other, shop]))
    assert agents_online(bot_id=shop.pk) is True


@pytest.mark.django_db
def test_connecting_admits_agents_only_and_marks_them_present() -> None:
    from django.contrib.auth.models import AnonymousUser

    ann, nobody = make_user("ann", agent=True), make_user("nobody")
    assert live.agent_connect(user=AnonymousUser()) is None
    assert live.agent_connect(user=nobody) is None
    assert live.agent_connect(user=ann) == ann
    assert list(Presence.objects.values_list("user__username", flat=True)) == ["ann"]


# --- The lists ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_queue_is_oldest_request_first_and_mine_is_the_agents_own() -> None:
    bot = make_bot()
    now = timezone.now()
    late = make_conversation(bot, status=WAITING, handoff_requested_at=now)
    early = make_conversation(bot, status=WAITING, handoff_requested_at=now - timedelta(minutes=3))
    make_message(early, text="x" * 300)
    make_message(early, role="bot", text="Let me", source="llm", status="pending")  # being written
    ann, bob = make_user("ann", staff=True), make_user("bob", staff=True)
    ours = make_conversation(bot, status=WITH_AGENT, assigned_agent=ann)
    make_conversation(bot, status=WITH_AGENT, assigned_agent=bob)
    queue, mine = live.agent_lists(agent=ann)
    assert [c.pk for c in queue] == [early.pk, late.pk]
    assert [c.pk for c in mine] == [ours.pk]
    assert queue[0].last_message == "x" * 300 and queue[1].last_message is None


# --- The visitor's side --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_queues_the_conversation_only_while_an_agent_is_online() -> None:
    bot = make_bot()
    first, second = make_conversation(bot), make_conversation(bot)
    alone = handoff.handoff_request(conversation_id=first.pk)
    assert (alone.status, alone.queued, alone.position) == ("open", False, None)
    first.refresh_from_db()
    assert first.needs_followup is True and first.handoff_requested_at is not None

    online(make_user("ann", staff=True))
    one = handoff.handoff_request(conversation_id=first.pk)
    two = handoff.handoff_request(conversation_id=second.pk)
    assert (one.status, one.queued, one.position) == (WAITING, True, 1)
    assert (two.status, two.queued, two.position) == (WAITING, True, 2)
    again = handoff.handoff_request(conversation_id=second.pk)
    assert (again.queued, again.position) == (False, 2)
    # The new wait counts from the new request, not from the first one.
    assert Conversation.objects.get(pk=first.pk).handoff_requested_at > first.handoff_requested_at


@pytest.mark.django_db
def test_a_wait_ends_only_if_it_is_still_the_same_wait(settings: Any) -> None:
    settings.HANDOFF_WAIT_SECONDS = 120
    bot = make_bot()
    since = timezone.now() - timedelta(seconds=30)
    conversation = make_conversation(bot, status=WAITING, handoff_requested_at=since)
    assert handoff.handoff_state_current(conversation_id=conversation.pk)[1] is False  # 90 s to go
    assert 85 < handoff.wait_remaining(since) <= 90
    assert (
        handoff.handoff_expire(conversation_id=conversation.pk, waiting_since=since - timedelta(1)) is False
    )
    assert handoff.handoff_expire(conversation_id=conversation.pk, waiting_since=since) is True
    conversation.refresh_from_db()
    assert (conversation.status, conversation.needs_followup) == ("open", True)
    assert handoff.handoff_expire(conversation_id=conversation.pk, waiting_since=since) is False

    overdue = make_conversation(
        bot, status=WAITING, handoff_requested_at=timezone.now() - timedelta(minutes=5)
    )
    assert handoff.handoff_state_current(conversation_id=overdue.pk)[1] is True
    assert handoff_state(conversation_id=overdue.pk).status == "open"


@pytest.mark.django_db
@pytest.mark.parametrize("email", ["not an email", "a@b", "x" * 250 + "@example.com", "ann@exa mple.com"])
def test_a_bad_contact_address_is_refused_and_not_stored(email: str) -> None:
    conversation = make_conversation()
    with pytest.raises(ValidationError):
        handoff.visitor_contact_save(conversation_id=conversation.pk, email=email)
    assert Visitor.objects.get().email == ""
    assert Conversation.objects.get().needs_followup is False


@pytest.mark.django_db
def test_a_contact_address_is_kept_and_flags_the_conversation() -> None:
    conversation = make_conversation(resolved_at=timezone.now())
    assert handoff.visitor_contact_save(conversation_id=conversation.pk, email=" ann@example.com ") == (
        conversation.bot_id
    )
    conversation.refresh_from_db()
    assert Visitor.objects.get().email == "ann@example.com"
    assert (conversation.needs_followup, conversation.resolved_at) == (True, None)
