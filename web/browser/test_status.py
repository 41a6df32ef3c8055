"""Browser tests of the owner's status page (issue 15): plain words, the
messages of the last hour and people online, a time scale on the graphs,
and an outage shown as one."""

import re

from playwright.sync_api import expect

from conftest import OUT
from helpers import T, expect_msg, join_link, new_room, run_axe, say


def test_status_counts_messages_and_people(people, relay):
    owner = people(width=1280, height=800)
    owner.page.goto(relay.url + "status")
    expect(owner.page.locator("#state")).to_contain_text("The hub is running.", timeout=T)
    before = int(owner.page.inner_text("#t-people .v"))
    alice, bob = people(), people()
    link = new_room(alice, "Alice Counted")
    join_link(bob, link, "Bob Counted")
    for i in range(3):
        say(alice, f"counted message {i}")
    expect_msg(bob, "Alice Counted", "counted message 2")
    expect(owner.page.locator("#t-people .v")).to_have_text(str(before + 2), timeout=T)
    expect(owner.page.locator("#t-messages .v")).to_have_text("3", timeout=T)
    expect(owner.page.locator("#t-messages .say")).to_contain_text(re.compile(r"^since this page opened .* ago; \d+ since the hub started$"))
    expect(owner.page.locator("#t-people .say")).to_contain_text("room")
    # Every graph has its time scale.
    for tile in ("people", "messages", "pages", "memory", "waiting"):
        expect(owner.page.locator(f"#t-{tile} .axis")).to_have_text("3 min agonow")
    for word in ("Queued bytes", "resident", "worst-case"):
        assert word not in owner.page.inner_text("main")
    assert owner.errors == []


def test_status_page_during_an_outage(people, relay):
    shots = []
    for width, height, scheme in ((1280, 800, "light"), (360, 780, "dark")):
        p = people(width=width, height=height, scheme=scheme)
        p.page.goto(relay.url + "status")
        expect(p.page.locator("#t-uptime .v")).not_to_have_text("", timeout=T)
        shots.append((p, f"status-down-{width}x{height}-{scheme}.png"))
    p = shots[0][0]
    assert p.page.evaluate("document.body.classList.contains('down')") is False
    expect(p.page.locator(".stale-note").first).to_be_hidden()
    relay.stop()
    try:
        for q, name in shots:
            state = q.page.locator("#state")
            expect(state).to_contain_text("The hub is not answering (since", timeout=T)
            expect(state).to_contain_text("The figures below are the last it gave, at")
            expect(state).to_have_attribute("data-state", "down")
            expect(q.page.locator("#t-uptime .v")).to_have_text("not running")
            expect(q.page.locator("#t-people .stale-note")).to_be_visible()
            expect(q.page.locator("#t-people .stale-note")).to_have_text("last known value")
            q.page.wait_for_timeout(2500)
            expect(state).to_contain_text(re.compile(r"\(since .*, \d+ s\)"))
            q.page.screenshot(path=OUT / name)
            assert run_axe(q.page) == [], f"status down {name}"
    finally:
        relay.start()
    for q, _ in shots:
        expect(q.page.locator("#state")).to_contain_text("The hub is running.", timeout=T)
        expect(q.page.locator("#t-uptime .v")).not_to_have_text("not running")
        expect(q.page.locator("#t-people .stale-note")).to_be_hidden()
        assert q.page.evaluate("document.body.classList.contains('down')") is False
