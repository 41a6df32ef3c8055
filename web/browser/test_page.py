"""Browser tests of the hub's page: Debian's Chromium, pages from
http://hub.lan:PORT/app/ (an insecure context), the freshly built relay."""

import base64
import hashlib
import json
import re
import time

from playwright.sync_api import expect

from conftest import OUT, LOG, SECRETS, Eavesdropper, hkdf_sha256, room_id_of_key
from helpers import T, chat_scene, expect_msg, join_link, join_pass, last_msg, new_room, run_axe, say, secret


def test_insecure_context_loads_without_errors(people):
    p = people()
    p.page.goto(p.relay.url)
    assert p.page.evaluate("isSecureContext") is False
    assert p.page.evaluate("typeof crypto.subtle") == "undefined"
    expect(p.page.locator("#new-room")).to_be_visible()
    # /app redirects to /app/; the page loads only from the hub.
    p.page.goto(p.relay.url.rstrip("/"))
    assert p.page.url == p.relay.url
    assert p.errors == []


def test_invite_room_two_people_chat_presence_typing_reactions(people, relay):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Liddell")
    assert link.startswith(f"http://hub.lan:{relay.port}/app/#")
    key = link.split("#", 1)[1]
    assert len(key) == 46  # the key and its check
    eve = Eavesdropper(relay.port, room_id_of_key(key))
    try:
        join_link(bob, link, "Bob Builder")
        # The key left the address bar once read.
        assert "#" not in bob.page.url
        # Presence: both see both names, and who joined.
        for p in (alice, bob):
            expect(p.page.locator("#member-count")).to_have_text("3", timeout=T)
            expect(p.page.locator("#members-btn")).to_be_visible()
        alice.page.click("#members-btn")
        expect(alice.page.locator("#member-list")).to_contain_text("Bob Builder", timeout=T)
        expect(alice.page.locator("#member-list")).to_contain_text("Alice Liddell (you)")
        expect(alice.page.locator("#member-list")).to_contain_text("someone with another key")
        expect(alice.page.locator("#log")).to_contain_text("Bob Builder joined.", timeout=T)

        # Both ways, with delivered marks on one's own messages.
        say(alice, "the tea party starts at four")
        expect_msg(bob, "Alice Liddell", "the tea party starts at four")
        expect(last_msg(alice).locator(".mark")).to_have_text("✓ sent", timeout=T)
        say(bob, "we can fix it, see you at four")
        expect_msg(alice, "Bob Builder", "we can fix it, see you at four")

        # Typing: shown to the other, gone after sending.
        bob.page.type("#text", secret("typing slowly"), delay=20)
        expect(alice.page.locator("#typing")).to_have_text("Bob Builder is typing…", timeout=T)
        bob.page.press("#text", "Enter")
        expect(alice.page.locator("#typing")).to_have_text("", timeout=T)

        # Reactions with counts, seen by both; a second click takes it back.
        msg = expect_msg(bob, "Alice Liddell", "the tea party starts at four")
        msg.get_by_role("button", name="React", exact=True).click()
        msg.get_by_role("button", name="React with 👍").click()
        chip = expect_msg(alice, "Alice Liddell", "the tea party starts at four").locator(".chip")
        expect(chip).to_have_text("👍 1", timeout=T)
        chip.click()
        expect(chip).to_have_text("👍 2", timeout=T)
        expect(chip).to_have_attribute("aria-pressed", "true")
        chip.click()
        expect(chip).to_have_text("👍 1", timeout=T)

        # Unread count in the title and a favicon badge while the tab is in the background.
        bob.page.evaluate("document.hasFocus = () => false")
        say(alice, "are you there?")
        expect(bob.page).to_have_title("(1) Whisper", timeout=T)
        assert bob.page.evaluate("document.getElementById('favicon').href").startswith("data:image/png")
        bob.page.evaluate("document.hasFocus = () => true; dispatchEvent(new Event('focus'))")
        expect(bob.page).to_have_title("Whisper", timeout=T)

        # The size left is shown before sending.
        alice.page.fill("#text", "x" * 100)
        left = int(alice.page.inner_text("#left").split()[0])
        assert 7000 < left < 7600, left
        alice.page.fill("#text", "x" * 8000)
        expect(alice.page.locator("#left")).to_contain_text("too long")
        expect(alice.page.locator("#send")).to_be_disabled()
        alice.page.fill("#text", "")

        # The eavesdropper saw frames of every kind, but no text and no name.
        kinds = {f["type"] for f in eve.all()}
        assert {"userList", "userJoined", "message", "userTyping", "reaction"} <= kinds, kinds
        seen = eve.text()
        for s in SECRETS:
            assert s not in seen, f"the relay carried {s!r} in clear"
        for f in eve.all():
            if f["type"] == "message":
                assert f["user"]["name"] == "member"
        assert alice.errors == [] and bob.errors == []
    finally:
        eve.close()


def test_invite_from_localhost_uses_the_hubs_network_name(people, relay):
    """The owner on the hub itself: a localhost link would be useless to others."""
    p = people()
    p.page.goto(f"http://localhost:{relay.port}/app/")
    hub = p.page.evaluate("fetch('hub.json').then(r => r.json())")
    p.page.fill("#name", secret("Owner On The Pi"))
    p.page.click("#new-room")
    expect(p.page.locator("#invite")).to_be_visible(timeout=T)
    link = p.page.input_value("#invite-link")
    if hub["hostname"] or hub["addresses"]:
        assert not link.startswith("http://localhost"), link
        first = hub["hostname"] or hub["addresses"][0]
        assert link.startswith(f"http://{first}:{relay.port}/app/#"), (link, hub)
    else:
        expect(p.page.locator("#copied")).to_contain_text("works only on the hub itself")
    # Opened by its LAN name, the page offers the address it was opened with.
    q = people()
    q.page.goto(relay.url)
    q.page.evaluate("fetch('hub.json').then(r => r.json())")
    q.page.fill("#name", "Guest")
    q.page.click("#new-room")
    assert q.page.input_value("#invite-link").startswith(f"http://hub.lan:{relay.port}/app/#")
    assert q.page.locator("#host-choice").is_hidden()


def test_wrong_passphrase_cant_decrypt_and_tampering_is_counted(people, relay):
    alice, bob, carol = people(), people(), people()
    join_pass(alice, "Book Club", "correct horse battery staple", "Alice Passphrase")
    join_pass(bob, "book club", "correct horse battery staple", "Bob Passphrase")
    join_pass(carol, "Book Club", "wrong horse battery staple", "Carol Wrongkey")
    kdf_ms = int(alice.page.evaluate("document.body.dataset.kdfMs"))
    print(f"\nKDF (scrypt N=2^15 r=8 in a Worker) in headless Chromium: {kdf_ms} ms")

    say(alice, "chapter seven for next week")
    expect_msg(bob, "Alice Passphrase", "chapter seven for next week")
    # The mistyped passphrase leads to another room (the id comes from the key): Carol
    # is told at once, through the door of the room name, and sees nothing of theirs.
    expect(carol.page.locator("#wrong-key")).to_contain_text(
        "the passphrase you typed is probably not the one the others use", timeout=T
    )
    expect(carol.page.locator("#member-count")).to_have_text("1")
    say(carol, "hello? anyone?")
    expect(carol.page.locator("#log")).not_to_contain_text("chapter seven")
    expect(alice.page.locator("#log")).not_to_contain_text("hello? anyone?")

    # Whoever knows the room name finds only the door: no profiles, no messages, a
    # check of 8 bits and a person tag per page.
    door_id = base64.urlsafe_b64encode(hkdf_sha256(b"book club", b"rtce2ee-whisper/v1", b"room name id", 12))
    door = Eavesdropper(relay.port, door_id.decode().rstrip("="), user_id="stranger")
    time.sleep(0.3)
    at_door = next(f for f in door.all() if f["type"] == "userList")["users"]
    door.close()
    avatars = [u["avatar"] for u in at_door if u["id"] != "stranger"]
    assert len(avatars) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]{2}\.[A-Za-z0-9_-]{12}", a) for a in avatars), avatars
    assert len({a.split(".")[0] for a in avatars}) == 2, "two passphrases, two checks"

    # A relay (or anyone on the path) that alters a message: it replays Alice's
    # sealed profile under its own id, so the others take it for a key holder,
    # then sends a copy of a real message with one bit flipped.
    # The page keeps its room id to itself; derive it independently (scrypt, then HKDF).
    eve_probe = None
    try:
        key = hashlib.scrypt(
            b"correct horse battery staple", salt=b"rtce2ee-whisper/v1/room/book club",
            n=2**15, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32,
        )
        room_id = base64.urlsafe_b64encode(hkdf_sha256(key, b"rtce2ee-whisper/v1", b"room id", 12)).decode().rstrip("=")
        eve_probe = Eavesdropper(relay.port, room_id, user_id="probe")
        time.sleep(0.3)
        alice.page.click("#members-btn")
        expect(alice.page.locator("#member-list")).to_contain_text("someone with another key")
        users = next(f for f in eve_probe.all() if f["type"] == "userList")["users"]
        say(alice, "the real message")
        expect_msg(bob, "Alice Passphrase", "the real message")
        time.sleep(0.3)
        real = [f for f in eve_probe.all() if f["type"] == "message"][-1]["content"]
        assert "the real message" not in real
        alice_profile = next(u["avatar"] for u in users if u["avatar"] and u["id"] != "probe")
        mallory = Eavesdropper(relay.port, room_id, user_id="mallory", avatar=alice_profile)
        time.sleep(0.3)
        nonce, body = real.split(".")
        flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
        mallory.send({"type": "message", "data": {"content": f"{nonce}.{flipped}"}})
        expect(bob.page.locator("#dropped")).to_have_text(
            "1 altered message was dropped: someone tampered with them.", timeout=T
        )
        mallory.send({"type": "message", "data": {"content": f"{nonce[:-2]}AA.{body}"}})
        expect(bob.page.locator("#dropped")).to_contain_text("2 altered messages were dropped", timeout=T)
        assert bob.page.locator("#log .msg", has_text="the real message").count() == 1
        mallory.close()
        seen = eve_probe.text()
        assert [s for s in SECRETS if s in seen] == []
    finally:
        if eve_probe:
            eve_probe.close()


def test_limits_size_left_and_rate_limit_sentences(people):
    alice, bob = people(width=320, height=640), people()
    link = new_room(alice, "Alice Limits")
    join_link(bob, link, "Bob Limits")
    # The largest text the page calls sendable is accepted by the relay.
    alice.page.fill("#text", "x")
    left = int(alice.page.inner_text("#left").split()[0])
    alice.page.fill("#text", "y" * (left + 1))
    expect(alice.page.locator("#left")).to_have_text("0 bytes left")
    alice.page.press("#text", "Enter")
    expect(last_msg(alice).locator(".mark")).to_have_text("✓ sent", timeout=T)
    expect(bob.page.locator("#log .msg:not(.system)").last).to_contain_text("yyyy", timeout=T)
    alice.page.fill("#text", "y" * (left + 5))
    expect(alice.page.locator("#left")).to_contain_text("too long")
    expect(alice.page.locator("#send")).to_be_disabled()
    alice.page.fill("#text", "")
    # Past the message budget (30 a minute): a sentence, and the message marked.
    error = alice.page.locator("#chat-error")
    for i in range(40):
        if error.inner_text():
            break
        say(alice, f"burst {i}")
    # The first sentence, or the second one if the loop's last Enter came while blocked.
    expect(error).to_have_text(
        re.compile(r"^(Slow down; you can send again in|Not sent yet: wait) \d+ s(\.|, your text stays\.)$"), timeout=T
    )
    failed = alice.page.locator("#log .msg.mine", has=alice.page.locator(".mark", has_text="not sent"))
    expect(failed).to_have_count(1, timeout=T)
    assert alice.page.locator("#log .msg.mine .mark", has_text="✓ sent").count() >= 29
    # Sending waits out the budget, then the failed message can go again.
    alice.page.fill("#text", "x")
    expect(alice.page.locator("#send")).to_be_enabled(timeout=T)
    alice.page.fill("#text", "")
    text = failed.locator(".body").inner_text()
    failed.get_by_role("button", name="Send again").click()
    again = alice.page.locator("#log .msg.mine", has=alice.page.get_by_text(text, exact=True))
    expect(again.locator(".mark")).to_have_text("✓ sent", timeout=T)
    expect(bob.page.locator("#log")).to_contain_text(text)
    # Nothing of the page spills past a 320 px screen.
    assert alice.page.evaluate("document.documentElement.scrollWidth") <= 320
    alice.page.screenshot(path=OUT / "chat-320x640-light.png")


WORKER_RUNS = """() => new Promise((done) => {
    const w = new Worker('kdf-worker.js');
    const runs = [];
    let t0 = performance.now();
    w.onmessage = () => {
        runs.push(performance.now() - t0);
        if (runs.length === 3) { w.terminate(); done(runs.map(Math.round)); return; }
        t0 = performance.now();
        w.postMessage({ room: 'r', passphrase: 'p' + runs.length });
    };
    w.postMessage({ room: 'r', passphrase: 'p' });
})"""


def test_kdf_time_at_a_phone_like_cpu(people):
    """scrypt's time in the Worker (first run includes starting it), plain and
    at a 4x CPU throttle; printed for the README, bounded loosely."""
    p = people()
    p.page.goto(p.relay.url)
    plain = p.page.evaluate(WORKER_RUNS)
    cdp = p.ctx.new_cdp_session(p.page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
    throttled = p.page.evaluate(WORKER_RUNS)
    join_pass(p, "Throttled Room", "a passphrase typed on a phone", "Phone User")
    entering = int(p.page.evaluate("document.body.dataset.kdfMs"))
    print(f"\nKDF worker runs {plain} ms; at a 4x CPU throttle {throttled} ms, entering a room {entering} ms")
    assert len(plain) == len(throttled) == 3 and entering < 20_000


def test_reconnect_after_relay_restart(people, relay):
    alice, bob = people(), people()
    link = new_room(alice, "Alice Reconnect")
    join_link(bob, link, "Bob Reconnect")
    say(alice, "before the restart")
    expect_msg(bob, "Alice Reconnect", "before the restart")

    relay.restart()
    # A hiccup, not an error screen: the state says so, then both are back.
    expect(alice.page.locator("#conn")).to_contain_text("reconnecting", timeout=T)
    for p in (alice, bob):
        expect(p.page.locator("#conn")).to_have_text("connected", timeout=20_000)
        expect(p.page.locator("#member-count")).to_have_text("2", timeout=T)
        expect(p.page.locator("#log")).to_contain_text("Reconnected.")
    say(bob, "after the restart")
    expect_msg(alice, "Bob Reconnect", "after the restart")
    say(alice, "still here")
    expect_msg(bob, "Alice Reconnect", "still here")

    # Sent while the hub is down: queued, then delivered after the rejoin.
    relay.stop()
    expect(alice.page.locator("#conn")).to_contain_text("reconnecting", timeout=T)
    say(alice, "written during the outage")
    expect(last_msg(alice).locator(".mark")).to_have_text("waiting for the connection…")
    relay.start()
    # (Bob sees it only if he rejoined first: the relay keeps no history.)
    expect(last_msg(alice).locator(".mark")).to_have_text("✓ sent", timeout=20_000)
    for p in (alice, bob):
        expect(p.page.locator("#member-count")).to_have_text("2", timeout=20_000)
    say(bob, "and after the second one")
    expect_msg(alice, "Bob Reconnect", "and after the second one")
    # The browser reports each refused attempt itself; nothing else went wrong.
    for p in (alice, bob):
        assert [e for e in p.errors if "ERR_CONNECTION_REFUSED" not in e] == []


def test_accessibility_axe(people, relay):
    for scheme in ("light", "dark"):
        p = people(scheme=scheme)
        p.page.goto(relay.url)
        p.page.click("#pass-box summary")
        assert run_axe(p.page) == [], f"lobby {scheme}"
        alice, _ = chat_scene(people, 360, 780, scheme)
        v = run_axe(alice.page)
        assert v == [], f"chat {scheme}: {json.dumps(v, ensure_ascii=False)}"
        alice.page.click("#settings-btn")
        alice.page.click("#invite-btn")
        assert run_axe(alice.page) == [], f"invite {scheme}"
        p.page.goto(relay.url + "status")
        expect(p.page.locator(".tile")).to_have_count(6, timeout=T)
        assert run_axe(p.page) == [], f"status {scheme}"
    # Keyboard: the lobby works without a pointer.
    k = people()
    k.page.goto(relay.url)
    k.page.focus("#name")
    k.page.keyboard.type("Keyboard User")
    k.page.keyboard.press("Enter")
    expect(k.page.locator("#invite")).to_be_visible(timeout=T)


def test_status_page_refreshes_from_health(people, relay):
    p = people(width=1280, height=800)
    p.page.goto(relay.url + "status")
    expect(p.page.locator("#state")).to_contain_text("The hub is running.", timeout=T)
    expect(p.page.locator(".tile")).to_have_count(6)
    expect(p.page.locator("#t-memory .say")).to_contain_text("of the most it can ever need", timeout=T)
    expect(p.page.locator("#t-memory .say")).to_contain_text("This is fine.")
    first = p.page.inner_text("#state")
    expect(p.page.locator("#state")).not_to_have_text(first, timeout=T)
    assert p.errors == []


def test_screenshots(people, relay):
    """Writes the README's screenshots (360x780 and 1280x800, light and dark)."""
    OUT.mkdir(parents=True, exist_ok=True)
    for width, height in ((360, 780), (1280, 800)):
        for scheme in ("light", "dark"):
            tag = f"{width}x{height}-{scheme}"
            p = people(width=width, height=height, scheme=scheme)
            p.page.goto(relay.url)
            p.page.fill("#name", "Alice")
            p.page.screenshot(path=OUT / f"lobby-{tag}.png")
            alice, _ = chat_scene(people, width, height, scheme)
            alice.page.screenshot(path=OUT / f"chat-{tag}.png")
            alice.page.click("#invite-btn")
            alice.page.screenshot(path=OUT / f"invite-{tag}.png")
            p.page.goto(relay.url + "status")
            expect(p.page.locator("#t-memory .v")).to_contain_text("MiB", timeout=T)
            time.sleep(2.2)
            p.page.screenshot(path=OUT / f"status-{tag}.png")
    assert len(list(OUT.glob("*.png"))) >= 16


def test_zz_relay_trace_log_holds_no_plaintext_and_no_name(relay):
    """Runs last: the relay's own output at RUST_LOG=trace over all the tests above."""
    text = LOG.read_text(errors="replace")
    assert text.count("listening on") >= 3, "the log of every relay run was captured"
    assert len(SECRETS) > 20
    for s in SECRETS:
        assert s not in text, f"the relay logged {s!r}"
