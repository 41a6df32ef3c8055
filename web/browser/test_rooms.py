"""Browser tests of rooms and invites as people use them (issue 15): rooms
remembered in this browser, Leave and rejoin, a room named by its creator,
the wrong-passphrase hint, the invite dialog and the lobby on a phone."""

import time

from playwright.sync_api import expect

from conftest import Eavesdropper, room_id_of_key
from helpers import T, expect_msg, join_link, join_pass, lobby, say, secret


def test_named_room_leave_rejoin_and_forget(people, relay):
    alice, bob = people(), people()
    lobby(alice, "Alice Leaver")
    alice.page.fill("#new-title", secret("Tea Club Secret Name"))
    alice.page.click("#new-room")
    expect(alice.page.locator("#invite")).to_be_visible(timeout=T)
    link = alice.page.input_value("#invite-link")
    alice.page.click("#invite form button")
    expect(alice.page.locator("#room-title")).to_have_text("Tea Club Secret Name")
    eve = Eavesdropper(relay.port, room_id_of_key(link.split("#", 1)[1]))
    try:
        join_link(bob, link, "Bob Stayer")
        # The name reaches the invitee sealed in the creator's profile, never the relay.
        expect(bob.page.locator("#room-title")).to_have_text("Tea Club Secret Name", timeout=T)
        assert "Tea Club" not in eve.text()

        # Leave: back in the lobby, focus on a way straight back.
        alice.page.click("#leave-btn")
        expect(alice.page.locator("#lobby")).to_be_visible()
        expect(alice.page.locator("#left-text")).to_contain_text('You left "Tea Club Secret Name"')
        expect(alice.page.locator("#rejoin")).to_be_focused()
        expect(bob.page.locator("#log")).to_contain_text("Alice Leaver left.", timeout=T)
        alice.page.keyboard.press("Enter")
        expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
        expect(bob.page.locator("#log")).to_contain_text("Alice Leaver joined.", timeout=T)
        say(alice, "back again")
        expect_msg(bob, "Alice Leaver", "back again")

        # After Leave and a reload, the room is still in this browser's list.
        alice.page.click("#leave-btn")
        alice.page.reload()
        saved = alice.page.locator("#saved-list li")
        expect(saved).to_have_count(1)
        expect(saved.locator(".open")).to_have_text("Tea Club Secret Name")
        saved.locator(".open").click()
        expect(alice.page.locator("#conn")).to_have_text("connected", timeout=T)
        say(alice, "and once more")
        expect_msg(bob, "Alice Leaver", "and once more")

        # The invitee who reloads keeps the room too (the tab returns to it; after Leave it is listed).
        bob.page.reload()
        expect(bob.page.locator("#conn")).to_have_text("connected", timeout=T)
        expect(bob.page.locator("#room-title")).to_have_text("Tea Club Secret Name", timeout=T)
        bob.page.click("#leave-btn")
        bob.page.reload()
        expect(bob.page.locator("#saved-list .open")).to_have_text("Tea Club Secret Name")

        # Forget removes the key from this browser, with an undo.
        bob.page.get_by_role("button", name="Forget Tea Club Secret Name").click()
        expect(bob.page.locator("#saved-list")).to_contain_text('"Tea Club Secret Name" forgotten.')
        assert "Tea Club" not in (bob.page.evaluate("localStorage.getItem('whisper.rooms')") or "")
        bob.page.get_by_role("button", name="Undo").click()
        expect(bob.page.locator("#saved-list .open")).to_have_text("Tea Club Secret Name")
        bob.page.get_by_role("button", name="Forget Tea Club Secret Name").click()
        bob.page.reload()
        expect(bob.page.locator("#saved")).to_be_hidden()
        assert alice.errors == [] and bob.errors == []
    finally:
        eve.close()


def test_wrong_passphrase_hint_goes_to_the_one_who_typed_it(people, relay):
    alice, bob, carol = people(), people(), people()
    join_pass(alice, "Garden Club", "roses are red and violets blue", "Alice Gardener")
    join_pass(bob, "garden club", "roses are red and violets blue", "Bob Gardener")
    join_pass(carol, "Garden Club", "roses are red and violets glue", "Carol Typo")
    hint = carol.page.locator("#wrong-key")
    expect(hint).to_be_visible(timeout=T)
    expect(hint).to_contain_text("the passphrase you typed is probably not the one the others use")
    for p in (alice, bob):
        # Carol's passphrase leads to another room: only the two of them are here.
        expect(p.page.locator("#member-count")).to_have_text("2", timeout=T)
        expect(p.page.locator("#wrong-key")).to_be_hidden()
    expect(carol.page.locator("#member-count")).to_have_text("1")
    # Typing it again: back to the form, the room name kept, the wrong key forgotten.
    carol.page.get_by_role("button", name="Type the passphrase again").click()
    expect(carol.page.locator("#passphrase")).to_be_focused()
    assert carol.page.input_value("#room-name") == "Garden Club"
    expect(carol.page.locator("#pass-error")).to_contain_text("Type the passphrase again")
    expect(carol.page.locator("#saved")).to_be_hidden()
    carol.page.fill("#passphrase", "roses are red and violets blue")
    carol.page.click("#pass-join")
    expect(carol.page.locator("#conn")).to_have_text("connected", timeout=T)
    say(alice, "welcome to the garden")
    expect_msg(carol, "Alice Gardener", "welcome to the garden")
    expect(carol.page.locator("#wrong-key")).to_be_hidden()
    # Two people only, one key each: both are told to check.
    dan, erin = people(), people()
    join_pass(dan, "Pair Room", "one passphrase", "Dan Pair")
    join_pass(erin, "Pair Room", "another passphrase", "Erin Pair")
    for p in (dan, erin):
        expect(p.page.locator("#wrong-key")).to_contain_text("one of you probably mistyped it", timeout=T)


def test_invite_dialog_on_a_phone(people):
    p = people()
    lobby(p, "Phone Inviter")
    p.page.click("#new-room")
    expect(p.page.locator("#invite")).to_be_visible(timeout=T)
    # The whole link is visible: nothing scrolled out of the field.
    field = p.page.locator("#invite-link")
    assert field.evaluate("f => f.scrollHeight <= f.clientHeight + 1 && f.scrollWidth <= f.clientWidth + 1")
    link = field.input_value()
    assert len(link) > 60
    done = p.page.locator("#invite form button")
    before = done.bounding_box()
    p.page.click("#copy")
    expect(p.page.locator("#copied")).to_have_text("Copied.")
    after = done.bounding_box()
    assert abs(before["y"] - after["y"]) < 1, "Copied. shifted the dialog"
    box = p.page.locator("#invite").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360


def test_lobby_layout_on_a_phone(people, relay):
    p = people()
    p.page.goto(relay.url + "#" + "A" * 43)  # an invite (any 32-byte key)
    expect(p.page.locator("#join-invite")).to_be_visible()
    # The two ways in do not touch, and one primary button at a time.
    a = p.page.locator("#join-invite").bounding_box()
    b = p.page.locator("#new-room").bounding_box()
    assert b["y"] - (a["y"] + a["height"]) >= 16, (a, b)
    p.page.click("#pass-box summary")
    primaries = p.page.locator("#lobby button.primary:visible")
    expect(primaries).to_have_count(1)
    # An error is shown where the person is looking, inside the screen.
    p.page.click("#join-invite")
    err = p.page.locator("#lobby-error")
    expect(err).to_have_text("Type your name first: it is shown to the others in the room.")
    time.sleep(0.3)
    eb = err.bounding_box()
    assert 0 <= eb["y"] and eb["y"] + eb["height"] <= 780, eb
    p.page.click("#pass-join")
    expect(p.page.locator("#name")).to_be_focused()
    time.sleep(0.3)
    eb = err.bounding_box()
    assert 0 <= eb["y"] and eb["y"] + eb["height"] <= 780, eb
    p.page.fill("#name", "Lobby Tester")
    p.page.click("#pass-join")
    perr = p.page.locator("#pass-error")
    expect(perr).to_have_text("Type both the room name and the passphrase.")
    pb = perr.bounding_box()
    assert pb["y"] + pb["height"] <= 780, pb
    assert p.page.evaluate("document.documentElement.scrollWidth") <= 360
