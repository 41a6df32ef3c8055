"""Browser tests of the conversation as people use it (issue 15): cues for
new messages, newlines on a phone, blank messages, safe links, long names,
the rate-limit state, one person in two tabs, reacting and focus."""

import re

from playwright.sync_api import expect

from conftest import OUT, Eavesdropper, room_id_of_key
from helpers import T, expect_msg, join_link, last_msg, lobby, new_room, say, secret


def pair(people, **kw):
    alice, bob = people(**kw), people(**kw)
    link = new_room(alice, "Alice Cue")
    join_link(bob, link, "Bob Cue")
    return alice, bob, link


def divider_next_text(p):
    return p.page.evaluate("document.querySelector('#log .divider')?.nextElementSibling?.textContent || ''")


def test_new_message_button_and_unread_divider(people):
    alice, bob, _ = pair(people)
    for i in range(14):
        say(bob, f"filler line number {i} to fill a phone screen")
    expect_msg(alice, "Bob Cue", "filler line number 13")
    expect(alice.page.locator("#jump")).to_be_hidden()
    assert alice.page.locator("#log .divider").count() == 0, "nothing unread while reading at the end"

    # Scrolled up: a new message below shows the button and the divider above it.
    alice.page.eval_on_selector("#log", "l => { l.scrollTop = 0; }")
    say(bob, "said while alice was scrolled up")
    jump = alice.page.locator("#jump")
    expect(jump).to_have_text("↓ 1 new message", timeout=T)
    say(bob, "and a second one")
    expect(jump).to_have_text("↓ 2 new messages", timeout=T)
    assert "said while alice was scrolled up" in divider_next_text(alice)
    assert alice.page.eval_on_selector("#log", "l => l.scrollHeight - l.scrollTop - l.clientHeight") > 200
    jump.click()
    expect(jump).to_be_hidden()
    assert alice.page.eval_on_selector("#log", "l => l.scrollHeight - l.scrollTop - l.clientHeight") < 80
    expect(alice.page.locator("#log .divider")).to_have_count(1)

    # Away from the tab: the divider moves to where the unread part begins.
    alice.page.evaluate("document.hasFocus = () => false")
    say(bob, "first one while the tab was hidden")
    say(bob, "second one while the tab was hidden")
    expect(alice.page.locator("#log")).to_contain_text("second one while the tab was hidden", timeout=T)
    expect(alice.page).to_have_title("(2) Whisper", timeout=T)
    assert "first one while the tab was hidden" in divider_next_text(alice)
    expect(alice.page.locator("#log .divider")).to_have_count(1)
    alice.page.evaluate("document.hasFocus = () => true; dispatchEvent(new Event('focus'))")
    expect(alice.page).to_have_title("Whisper", timeout=T)
    expect(alice.page.locator("#log .divider")).to_have_count(1)
    assert alice.errors == [] and bob.errors == []


def test_enter_makes_a_newline_on_a_touch_device(people, relay):
    phone = people(touch=True)
    desk = people()
    link = new_room(desk, "Desk Person")
    join_link(phone, link, "Phone Person")
    assert phone.page.evaluate("matchMedia('(hover: none) and (pointer: coarse)').matches")
    assert phone.page.get_attribute("#text", "enterkeyhint") == "enter"
    box = phone.page.locator("#text")
    box.fill(secret("first line"))
    box.press("Enter")
    box.press_sequentially("second line")
    assert box.input_value() == "first line\nsecond line"
    assert phone.page.locator("#log .msg.mine").count() == 0, "Enter did not send"
    phone.page.tap("#send")
    m = expect_msg(desk, "Phone Person", "second line")
    assert m.locator(".body").inner_text() == "first line\nsecond line"
    # On a desktop Enter still sends and Shift+Enter breaks the line.
    assert desk.page.get_attribute("#text", "enterkeyhint") == "send"
    desk.page.fill("#text", "a")
    desk.page.press("#text", "Shift+Enter")
    desk.page.keyboard.type("b")
    desk.page.press("#text", "Enter")
    expect(last_msg(phone).locator(".body")).to_have_text("a\nb", timeout=T)


def test_blank_message_is_not_sent_and_says_why(people):
    alice, bob, _ = pair(people)
    send = alice.page.locator("#send")
    expect(send).to_be_disabled()
    alice.page.fill("#text", "    ")
    expect(send).to_be_disabled()
    expect(alice.page.locator("#left")).to_have_text("Only spaces so far: there is nothing to send.")
    alice.page.press("#text", "Enter")
    assert alice.page.locator("#log .msg.mine").count() == 0
    assert alice.page.input_value("#text") == "    "
    alice.page.fill("#text", "  words  ")
    expect(send).to_be_enabled()


def test_links_are_safe(people, relay):
    alice, bob, link = pair(people)
    requests = []
    bob.page.on("request", lambda r: requests.append(r.url))
    text = secret(
        "see https://example.org/wiki/Tea_(drink), or javascript:alert(1) "
        "or JavaScript:alert(2) and data:text/html,<b>x</b> then http://10.9.8.7:8080/a?b=1&c=2."
    )
    say(alice, text)
    m = expect_msg(bob, "Alice Cue", "see https://example.org")
    body = m.locator(".body")
    # The text is shown exactly as sent.
    assert body.inner_text() == text
    links = body.locator("a")
    expect(links).to_have_count(2)
    first, second = links.nth(0), links.nth(1)
    assert first.inner_text() == "https://example.org/wiki/Tea_(drink)"
    assert first.get_attribute("href") == "https://example.org/wiki/Tea_(drink)"
    assert second.inner_text() == "http://10.9.8.7:8080/a?b=1&c=2"
    for a in (first, second):
        assert a.get_attribute("rel") == "noopener noreferrer"
        assert a.get_attribute("target") == "_blank"
    hrefs = bob.page.eval_on_selector_all("#log a", "as => as.map(a => a.protocol)")
    assert set(hrefs) <= {"http:", "https:"}, hrefs
    assert "alert" not in "".join(bob.page.eval_on_selector_all("#log a", "as => as.map(a => a.href)"))
    # Nothing was fetched for a preview.
    assert [u for u in requests if "example.org" in u or "10.9.8.7" in u] == []
    assert bob.page.locator("#log img").count() == 0


def test_long_name_on_a_phone(people, relay):
    alice, bob = people(), people()
    long = "Maximiliana Wilhelmina Bartholomew-Featherstonehaugh"  # 52 characters
    secret(long)
    lobby(alice, long)
    expect(alice.page.locator("#name-cut")).to_have_text(
        'Names are cut to 40 characters: others will see "Maximiliana Wilhelmina Bartholomew-Feath".'
    )
    alice.page.click("#new-room")
    link = alice.page.input_value("#invite-link")
    alice.page.click("#invite form button")
    join_link(bob, link, "Bob Short")
    say(alice, "a short note")
    mine = last_msg(alice)
    expect(mine.locator(".mark")).to_have_text("✓ sent", timeout=T)
    theirs = expect_msg(bob, "Maximiliana Wilhelmina Bartholomew-Feath", "a short note")
    for p, m in ((alice, mine), (bob, theirs)):
        box = m.bounding_box()
        for part in (".who", ".when") + ((".mark",) if p is alice else ()):
            b = m.locator(part).bounding_box()
            assert b["x"] >= box["x"] - 0.5 and b["x"] + b["width"] <= box["x"] + box["width"] + 0.5, (part, b, box)
            assert b["height"] < 24, f"{part} wrapped: {b}"
        assert p.page.evaluate("document.documentElement.scrollWidth") <= 360
    bob.page.click("#members-btn")
    expect(bob.page.locator("#member-list")).to_contain_text("Maximiliana Wilhelmina Bartholomew-Feath")
    mine.scroll_into_view_if_needed()
    alice.page.screenshot(path=OUT / "chat-long-name-360x780-light.png")
    assert alice.errors == [] and bob.errors == []


def burst_until_blocked(p, error):
    """Sends until the hub's rate limit answers; the pause lasts a second or two."""
    for i in range(40):
        if error.inner_text():
            return
        say(p, f"quick {i}")
    raise AssertionError("never rate-limited")


def test_rate_limit_state(people):
    alice, bob, _ = pair(people)
    composer_top = alice.page.locator("#composer").bounding_box()["y"]
    error = alice.page.locator("#chat-error")
    burst_until_blocked(alice, error)
    assert re.match(r"^(Slow down; you can send again in \d+ s\.|Not sent yet: .*)$", error.inner_text())
    # The error line does not push the layout.
    assert abs(alice.page.locator("#composer").bounding_box()["y"] - composer_top) < 1
    failed = alice.page.locator("#log .msg.mine .mark.failed")
    expect(failed.first).to_have_text("not sent: sent too fast", timeout=T)
    # Enter while blocked: told so, and the text stays in the box. (The pause
    # is short: if it ended before Enter, run into the limit again.)
    for _ in range(5):
        alice.page.fill("#text", "one more thing")
        alice.page.press("#text", "Enter")
        if "Not sent yet" in error.inner_text():
            break
        burst_until_blocked(alice, error)
    expect(error).to_have_text(re.compile(r"^Not sent yet: wait \d+ s, your text stays\.$"))
    assert abs(alice.page.locator("#composer").bounding_box()["y"] - composer_top) < 1
    assert alice.page.input_value("#text") == "one more thing"
    alice.page.screenshot(path=OUT / "rate-limit-360x780-light.png")
    # Once it clears, the reason stays on the message that was not delivered.
    expect(error).to_have_text("", timeout=T)
    expect(failed.first).to_have_text("not sent: sent too fast")
    expect(alice.page.locator("#send")).to_be_enabled()


def test_same_person_in_two_tabs(people, relay):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Twotabs")
    second = alice.tab()
    second.goto(relay.url)
    # The room is remembered in this browser: the second tab opens it from the lobby.
    second.locator("#saved-list .open").first.click()
    expect(second.locator("#conn")).to_have_text("connected", timeout=T)
    join_link(bob, link, "Bob Onetab")
    eve = Eavesdropper(relay.port, room_id_of_key(link.split("#", 1)[1]))
    try:
        for page in (alice.page, second, bob.page):
            expect(page.locator("#member-count")).to_have_text("3", timeout=T)  # Alice, Bob, eve
        bob.page.click("#members-btn")
        expect(bob.page.locator("#member-list")).to_contain_text("Alice Twotabs (2 tabs)")
        alice.page.click("#members-btn")
        expect(alice.page.locator("#member-list")).to_contain_text("Alice Twotabs (you, 2 tabs)")
        expect(alice.page.locator("#log")).to_contain_text("You opened this room in another tab.")
        say(alice, "written in the first tab")
        m = second.locator("#log .msg.mine", has_text="written in the first tab")
        expect(m).to_be_visible(timeout=T)
        expect(m.locator(".mark")).to_have_text("✓ from your other tab")
        expect_msg(bob, "Alice Twotabs", "written in the first tab")
        # The relay still sees two separate random ids and no name.
        ids = {u["id"] for f in eve.all() if f["type"] == "userList" for u in f["users"]}
        assert len(ids) == 4 and "Alice Twotabs" not in eve.text()
        second.click("#leave-btn")
        expect(alice.page.locator("#log")).to_contain_text("Your other tab left the room.", timeout=T)
    finally:
        eve.close()


def test_reacting_with_the_keyboard_and_a_long_press(people):
    alice, bob, link = pair(people)
    say(bob, "react to this with the keyboard")
    m = expect_msg(alice, "Bob Cue", "react to this with the keyboard")
    react = m.get_by_role("button", name="React", exact=True)
    # The button does not take a row of its own: the bubble is one line of meta plus the text.
    assert m.bounding_box()["height"] < 70, m.bounding_box()
    react.focus()
    expect(react).to_have_css("opacity", "1")
    alice.page.keyboard.press("Enter")
    first = m.get_by_role("button", name="React with 👍")
    expect(first).to_be_focused()
    alice.page.keyboard.press("Escape")
    expect(first).to_be_hidden()
    expect(react).to_be_focused()
    alice.page.keyboard.press("Enter")
    alice.page.keyboard.press("Tab")
    expect(m.get_by_role("button", name="React with ❤️")).to_be_focused()
    alice.page.keyboard.press("Enter")
    expect(m.locator(".chip")).to_have_text("❤️ 1", timeout=T)
    expect(react).to_be_focused()
    assert alice.page.evaluate("document.activeElement !== document.body")
    # A long press on a touch screen opens the same palette; the button stays out of the way there.
    phone = people(touch=True)
    join_link(phone, link, "Phone Presser")
    say(bob, "press and hold this one")
    pm = expect_msg(phone, "Bob Cue", "press and hold this one")
    expect(pm.get_by_role("button", name="React", exact=True)).to_be_hidden()
    box = pm.locator(".body").bounding_box()
    cdp = phone.ctx.new_cdp_session(phone.page)
    point = {"x": box["x"] + 10, "y": box["y"] + box["height"] / 2}
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point]})
    phone.page.wait_for_timeout(700)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    party = pm.get_by_role("button", name="React with 🎉")
    expect(party).to_be_visible(timeout=T)
    party.tap()
    expect(pm.locator(".chip")).to_have_text("🎉 1", timeout=T)
    assert phone.page.evaluate("document.activeElement !== document.body")


def test_axe_on_the_new_states(people, relay):
    """axe-core, light and dark: the reaction palette, the new-messages button and
    divider, a failed message, the wrong-passphrase hint, and the lobby after Leave."""
    from helpers import join_pass, run_axe

    for scheme in ("light", "dark"):
        alice, bob, _ = pair(people, scheme=scheme)
        for i in range(12):
            say(bob, f"{scheme} filler {i} for scrolling")
        expect_msg(alice, "Bob Cue", f"{scheme} filler 11")
        alice.page.eval_on_selector("#log", "l => { l.scrollTop = 0; }")
        say(bob, "https://example.org/ below the fold")
        expect(alice.page.locator("#jump")).to_be_visible(timeout=T)
        m = expect_msg(alice, "Bob Cue", f"{scheme} filler 0")
        m.get_by_role("button", name="React", exact=True).click()
        expect(m.get_by_role("button", name="React with 👍")).to_be_visible()
        v = run_axe(alice.page)
        assert v == [], f"chat {scheme}: {v}"
        alice.page.click("#leave-btn")
        expect(alice.page.locator("#rejoin")).to_be_focused()
        v = run_axe(alice.page)
        assert v == [], f"lobby after Leave {scheme}: {v}"
        carol, dan = people(scheme=scheme), people(scheme=scheme)
        join_pass(carol, f"Axe {scheme}", "first passphrase", "Carol Axe")
        join_pass(dan, f"Axe {scheme}", "second passphrase", "Dan Axe")
        expect(dan.page.locator("#wrong-key")).to_be_visible(timeout=T)
        v = run_axe(dan.page)
        assert v == [], f"wrong key {scheme}: {v}"
