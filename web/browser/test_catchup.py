"""Browser tests of catch-up (issue 13): nothing said is lost to a member who
comes back (away and back, a reload, a hub restart with messages typed on
both pages while it is down), invites with a check, an invite typed into an
open tab, the reconnect schedule, drafts kept over a reload.

The tests marked `needs_history` need the relay's side of PROTOCOL.md
section 7 (a join with `since` answered by a replay and a `history` frame);
they skip, saying so, on a relay that does not answer that way."""

import base64
import binascii
import json
import os
import random
import re
import time

import pytest
from playwright.sync_api import expect

from conftest import OUT, Eavesdropper, room_id_of_key
from helpers import T, expect_msg, join_link, lobby, new_room, run_axe, say, secret

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def relay_keeps_history(port):
    """Whether the relay answers a join with `since` with a `history` frame."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=2)
    try:
        room = "probe" + os.urandom(6).hex()
        ws.send(json.dumps({"type": "join", "data": {"room": room, "user": {"id": "probe", "name": "p"}, "since": ""}}))
        deadline = time.time() + 2
        while time.time() < deadline:
            try:
                f = json.loads(ws.recv())
            except Exception:
                return False
            if f.get("type") == "history":
                return True
        return False
    finally:
        ws.close()


@pytest.fixture
def needs_history(relay):
    if not relay_keeps_history(relay.port):
        pytest.skip("the relay does not answer a join with since with a history frame (PROTOCOL.md section 7 not built in)")


def texts(p):
    """The texts of the messages in p's log, in order."""
    return p.page.locator("#log .msg:not(.system) .body").all_inner_texts()


def once_each(p, *wanted):
    """Each of `wanted` is in p's log exactly once."""
    for w in wanted:
        expect(p.page.locator("#log .msg:not(.system)", has_text=w)).to_have_count(1, timeout=T)


def edit_once(text, rng):
    """`text` with one character changed, added or removed."""
    i = rng.randrange(len(text))
    kind = rng.choice(["change", "add", "remove"])
    if kind == "change":
        return text[:i] + rng.choice(ALPHABET.replace(text[i], "")) + text[i + 1 :]
    if kind == "add":
        return text[:i] + rng.choice(ALPHABET) + text[i:]
    return text[:i] + text[i + 1 :]


# --- invites -----------------------------------------------------------------


def test_ten_random_single_character_changes_to_an_invite_never_join(people, relay):
    alice = people()
    link = new_room(alice, "Alice Inviter")
    base, frag = link.split("#", 1)
    assert len(frag) == 46
    eve = Eavesdropper(relay.port, room_id_of_key(frag))
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"\nrandom edits, seed {seed}")
    rng = random.Random(seed)
    try:
        bob = people()
        tried = set()
        while len(tried) < 10:
            bad = edit_once(frag, rng)
            if bad == frag or bad in tried:
                continue
            tried.add(bad)
            bob.page.goto(f"{base}#{bad}")
            bob.page.fill("#name", secret("Bob Typo"))
            expect(bob.page.locator("#lobby-error")).to_contain_text("This invite link is damaged")
            expect(bob.page.locator("#invited")).to_be_hidden()
            assert "#" not in bob.page.url, "the fragment leaves the address bar, damaged or not"
        assert run_axe(bob.page) == []
        time.sleep(0.5)
        joins = [f for f in eve.all() if f["type"] == "userJoined"]
        assert joins == [], "no damaged invite joined the room"
        # The link as given still works.
        join_link(bob, link, "Bob Right")
        expect(alice.page.locator("#member-count")).to_have_text("3", timeout=T)  # Alice, eve, Bob
        assert bob.errors == []
    finally:
        eve.close()


def test_an_older_invite_without_a_check_joins_with_a_warning(people, relay):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Oldlink")
    base, frag = link.split("#", 1)
    raw = base64.urlsafe_b64decode(frag + "==")
    assert binascii.crc_hqx(raw[:32], 0xFFFF) == int.from_bytes(raw[32:], "big")
    old = base64.urlsafe_b64encode(raw[:32]).decode().rstrip("=")
    bob.page.goto(f"{base}#{old}")
    expect(bob.page.locator("#invite-old")).to_be_visible()
    expect(bob.page.locator("#invite-old")).to_contain_text("without a check against typing mistakes")
    assert run_axe(bob.page) == []
    bob.page.fill("#name", secret("Bob Oldlink"))
    bob.page.click("#join-invite")
    expect(bob.page.locator("#conn")).to_have_text("connected", timeout=T)
    expect(alice.page.locator("#member-count")).to_have_text("2", timeout=T)


def test_an_invite_typed_into_an_open_tab_is_taken_up_at_once(people, relay):
    alice, bob = people(), people()
    link_a = new_room(alice, "Alice Host", "Room A")
    frag_a = link_a.split("#", 1)[1]
    # In the lobby: only the fragment changes (no reload); the invite is offered at once.
    lobby(bob, "Bob Paster")
    bob.page.evaluate("window.loadedOnce = true")
    bob.page.evaluate(f"location.hash = {json.dumps(frag_a)}")
    expect(bob.page.locator("#invited")).to_be_visible(timeout=T)
    expect(bob.page.locator("#join-invite")).to_be_focused()
    assert "#" not in bob.page.url
    assert bob.page.evaluate("window.loadedOnce") is True, "no reload"
    bob.page.click("#join-invite")
    expect(bob.page.locator("#conn")).to_have_text("connected", timeout=T)
    expect(alice.page.locator("#member-count")).to_have_text("2", timeout=T)
    # In a room: a damaged invite is refused and the room kept; a good one for another room goes there.
    bob.page.evaluate(f"location.hash = {json.dumps(frag_a[:-1] + ('A' if frag_a[-1] != 'A' else 'Q'))}")
    expect(bob.page.locator("#chat-error")).to_contain_text("This invite link is damaged", timeout=T)
    assert "#" not in bob.page.url
    expect(bob.page.locator("#room-title")).to_have_text("Room A")
    carol = people()
    link_c = new_room(carol, "Carol Host", "Room C")
    bob.page.evaluate(f"location.hash = {json.dumps(link_c.split('#', 1)[1])}")
    expect(bob.page.locator("#room-title")).to_have_text("Room C", timeout=T)
    expect(carol.page.locator("#member-count")).to_have_text("2", timeout=T)
    expect(alice.page.locator("#member-count")).to_have_text("1", timeout=T)
    assert "#" not in bob.page.url
    assert bob.page.evaluate("window.loadedOnce") is True
    assert bob.errors == []


# --- reconnect and drafts ----------------------------------------------------


def test_back_within_about_a_second_of_the_hub_answering_again(people, relay):
    alice = people()
    new_room(alice, "Alice Quick")
    relay.stop()
    expect(alice.page.locator("#conn")).to_contain_text("reconnecting", timeout=T)
    time.sleep(4)  # down for a while: the page is past its first retries
    relay.start()
    t0 = time.time()
    expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
    took = time.time() - t0
    print(f"\nconnected again {took:.2f} s after the hub listened again")
    # At most 1.25 s between retries, plus the join's round trip.
    assert took < 2.0, took


def test_a_reload_keeps_the_half_typed_draft(people, relay):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Draft", "Drafts")
    join_link(bob, link, "Bob Draft")
    alice.page.fill("#text", secret("half of a thought about the"))
    alice.page.dispatch_event("#text", "input")
    alice.page.reload()
    expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
    expect(alice.page.locator("#text")).to_have_value("half of a thought about the")
    expect(alice.page.locator("#send")).to_be_enabled()
    # Per room: another room starts empty.
    carol = people()
    other = new_room(carol, "Carol Draft")
    # (Only the fragment differs from the page's address: the tab takes the invite up at once.)
    alice.page.goto(other)
    expect(alice.page.locator("#room-title")).to_have_text("Carol Draft's room", timeout=T)
    expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
    expect(alice.page.locator("#text")).to_have_value("")
    # Sent: the draft goes.
    alice.page.goto(link)
    expect(alice.page.locator("#room-title")).to_have_text("Drafts", timeout=T)
    expect(alice.page.locator("#text")).to_have_value("half of a thought about the", timeout=T)
    alice.page.press("#text", "Enter")
    expect_msg(bob, "Alice Draft", "half of a thought about the")
    alice.page.reload()
    expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
    expect(alice.page.locator("#text")).to_have_value("")
    assert "half of a thought" not in (alice.page.evaluate("localStorage.getItem('whisper.drafts')") or "")


# --- catch-up (needs the relay's side) -----------------------------------------


def test_away_and_back_shows_what_was_said_meanwhile(people, relay, needs_history):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Away")
    join_link(bob, link, "Bob Stays")
    say(alice, "before I go")
    expect_msg(bob, "Alice Away", "before I go")
    say(bob, "see you")
    expect_msg(alice, "Bob Stays", "see you")
    alice.page.bring_to_front()  # Alice reads it (the unread count clears) before she goes
    expect(alice.page).to_have_title("Whisper", timeout=T)
    alice.page.goto("about:blank")
    expect(bob.page.locator("#member-count")).to_have_text("1", timeout=T)
    say(bob, "said while alice was away")
    say(bob, "and one more")
    m = expect_msg(bob, "Bob Stays", "and one more")
    m.get_by_role("button", name="React", exact=True).click()
    m.get_by_role("button", name="React with 🎉").click()
    expect(m.locator(".chip")).to_have_text("🎉 1", timeout=T)
    alice.page.go_back()
    expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
    once_each(alice, "before I go", "see you", "said while alice was away", "and one more")
    back = expect_msg(alice, "Bob Stays", "and one more")
    expect(back.locator(".chip")).to_have_text("🎉 1", timeout=T)
    mine = alice.page.locator("#log .msg.mine", has_text="before I go")
    expect(mine.locator(".mark")).to_have_text("✓ sent")
    t = texts(alice)
    assert t.index("before I go") < t.index("see you") < t.index("said while alice was away") < t.index("and one more")
    # Where the new part begins: the divider before the first message said while away.
    after = alice.page.evaluate("document.querySelector('#log .divider:not(.earlier)')?.nextElementSibling?.textContent || ''")
    assert "said while alice was away" in after, after
    expect(alice.page.locator("#log")).to_contain_text("You are back in the room.")
    expect(alice.page.locator("#log .earlier")).to_have_count(0)
    assert alice.errors == []


def test_a_reload_shows_the_conversation_again_once(people, relay, needs_history):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Reload")
    join_link(bob, link, "Bob Reload")
    for i in range(3):
        say(alice, f"alice line {i}")
        expect_msg(bob, "Alice Reload", f"alice line {i}")
        say(bob, f"bob line {i}")
        expect_msg(alice, "Bob Reload", f"bob line {i}")
    m = expect_msg(alice, "Bob Reload", "bob line 1")
    m.get_by_role("button", name="React", exact=True).click()
    m.get_by_role("button", name="React with 👍").click()
    expect(m.locator(".chip")).to_have_text("👍 1", timeout=T)
    # Taken back and given again: applied twice by a catch-up, it must still read 1.
    m.locator(".chip").click()
    expect(m.locator(".chip")).to_have_count(0, timeout=T)
    m.get_by_role("button", name="React", exact=True).click()
    m.get_by_role("button", name="React with 👍").click()
    expect(m.locator(".chip")).to_have_text("👍 1", timeout=T)
    for p in (alice, bob):
        p.page.reload()
        expect(p.page.locator("#conn")).to_have_text("connected", timeout=T)
        once_each(p, *[f"alice line {i}" for i in range(3)], *[f"bob line {i}" for i in range(3)])
    again = expect_msg(alice, "Bob Reload", "bob line 1")
    expect(again.locator(".chip")).to_have_text("👍 1", timeout=T)
    expect(again.locator(".chip")).to_have_attribute("aria-pressed", "true")
    # One's own messages are one's own again after the reload, and can still be reacted to.
    expect(alice.page.locator("#log .msg.mine", has_text="alice line 2").locator(".mark")).to_have_text("✓ sent")
    expect(bob.page.locator("#log .msg.mine", has_text="bob line 0")).to_have_count(1)
    # The reaction given before the reload can be taken back after it.
    again.locator(".chip").click()
    expect(again.locator(".chip")).to_have_count(0, timeout=T)
    expect(expect_msg(bob, "Bob Reload", "bob line 1").locator(".chip")).to_have_count(0, timeout=T)


def test_a_newcomer_sees_earlier_messages_marked_as_such(people, relay, needs_history):
    alice, carol = people(), people()
    link = new_room(alice, "Alice Early")
    say(alice, "the plan for saturday")
    expect(alice.page.locator("#log .msg.mine .mark").last).to_have_text("✓ sent", timeout=T)
    join_link(carol, link, "Carol Late")
    expect_msg(carol, "Alice Early", "the plan for saturday")
    order = carol.page.locator("#log > *").all_inner_texts()
    i_earlier = next(i for i, t in enumerate(order) if "Earlier messages" in t)
    i_msg = next(i for i, t in enumerate(order) if "the plan for saturday" in t)
    i_joined = next(i for i, t in enumerate(order) if "You joined the room." in t)
    assert i_earlier < i_msg < i_joined, order


def test_hub_restart_with_a_message_typed_on_each_page_while_down(people, relay, needs_history):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Restart")
    join_link(bob, link, "Bob Restart")
    say(alice, "all fine before")
    expect_msg(bob, "Alice Restart", "all fine before")
    relay.stop()
    for p in (alice, bob):
        expect(p.page.locator("#conn")).to_contain_text("reconnecting", timeout=T)
    say(alice, "typed by alice while the hub was down")
    say(bob, "typed by bob while the hub was down")
    for p in (alice, bob):
        expect(p.page.locator("#log .msg.mine .mark").last).to_have_text("waiting for the connection…")
    relay.start()
    for p in (alice, bob):
        expect(p.page.locator("#conn")).to_have_text("connected", timeout=T)
    for p in (alice, bob):
        once_each(p, "all fine before", "typed by alice while the hub was down", "typed by bob while the hub was down")
        expect(p.page.locator("#log .msg.mine .mark").last).to_have_text("✓ sent", timeout=T)
    # The hub ran without systemd's store: its history went with the restart, and the pages say so quietly.
    expect(alice.page.locator("#log .gap")).to_have_text("Some earlier messages may be missing")
    for p in (alice, bob):
        assert [e for e in p.errors if "WebSocket connection to" not in e] == []


def test_screenshot_of_a_caught_up_conversation_on_a_phone(people, relay, needs_history):
    alice, bob = people(width=360, height=780), people(width=360, height=780)
    link = new_room(alice, "Alice Phone", "Family")
    join_link(bob, link, "Bob Phone")
    say(bob, "Dinner at seven tonight?")
    expect_msg(alice, "Bob Phone", "Dinner at seven")
    say(alice, "Yes, I'll bring dessert.")
    expect_msg(bob, "Alice Phone", "bring dessert")
    alice.page.goto("about:blank")
    say(bob, "Great. Grandma is coming too.")
    say(bob, "Can someone pick her up at 6:30?")
    m = expect_msg(bob, "Bob Phone", "pick her up")
    m.get_by_role("button", name="React", exact=True).click()
    m.get_by_role("button", name="React with 👍").click()
    alice.page.go_back()
    expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
    got = expect_msg(alice, "Bob Phone", "pick her up")
    expect(got.locator(".chip")).to_have_text("👍 1", timeout=T)
    alice.page.fill("#text", secret("I can, I'll leave at 6"))
    alice.page.screenshot(path=OUT / "catchup-360x780-light.png")
    assert run_axe(alice.page) == []
    # A newcomer's view in dark: earlier messages, then the join.
    carol = people(width=360, height=780, scheme="dark")
    join_link(carol, link, "Carol Phone")
    expect_msg(carol, "Bob Phone", "pick her up")
    expect(carol.page.locator("#log .earlier")).to_be_visible()
    carol.page.screenshot(path=OUT / "catchup-newcomer-360x780-dark.png")
    assert run_axe(carol.page) == []
