"""Helpers of the browser tests: a person's steps in the page (lobby, rooms,
messages) and the axe-core run."""

import time

from playwright.sync_api import expect

from conftest import ROOT, SECRETS

T = 10_000  # ms for any expectation
AXE = ROOT / "web/node_modules/axe-core/axe.min.js"


def secret(text):
    SECRETS.add(text)
    return text


def lobby(p, name):
    p.page.goto(p.relay.url)
    p.page.fill("#name", secret(name))


def new_room(p, name, title=None):
    lobby(p, name)
    if title:
        p.page.fill("#new-title", secret(title))
    p.page.click("#new-room")
    expect(p.page.locator("#invite")).to_be_visible(timeout=T)
    link = p.page.input_value("#invite-link")
    p.page.click("#invite form button")
    expect(p.page.locator("#conn")).to_have_text("connected", timeout=T)
    return link


def join_link(p, link, name):
    p.page.goto(link)
    p.page.fill("#name", secret(name))
    p.page.click("#join-invite")
    expect(p.page.locator("#conn")).to_have_text("connected", timeout=T)


def join_pass(p, room, passphrase, name):
    lobby(p, name)
    p.page.click("#pass-box summary")
    p.page.fill("#room-name", secret(room))
    p.page.fill("#passphrase", secret(passphrase))
    p.page.click("#pass-join")
    expect(p.page.locator("#conn")).to_have_text("connected", timeout=T)


def say(p, text):
    p.page.fill("#text", secret(text))
    p.page.press("#text", "Enter")


def last_msg(p):
    return p.page.locator("#log .msg:not(.system)").last


def expect_msg(p, who, text):
    m = p.page.locator("#log .msg:not(.system)", has_text=text).last
    expect(m).to_be_visible(timeout=T)
    expect(m.locator(".who")).to_have_text(who)
    return m



def run_axe(page, context=None):
    page.evaluate(AXE.read_text() + "\n;0")
    result = page.evaluate(
        "(ctx) => axe.run(ctx || document, { resultTypes: ['violations'] })"
        ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)})))",
        context,
    )
    return result


def chat_scene(people, width, height, scheme):
    alice = people(width=width, height=height, scheme=scheme)
    bob = people(width=width, height=height, scheme=scheme)
    link = new_room(alice, "Alice", "Weekend walks")
    join_link(bob, link, "Bob")
    say(bob, "Is anyone up for a walk at five?")
    expect_msg(alice, "Bob", "Is anyone up for a walk at five?")
    say(bob, "Route: https://www.openstreetmap.org/#map=15/51.505/-0.09")
    expect_msg(alice, "Bob", "Route:")
    say(alice, "Yes! Meet at the old bridge.")
    expect_msg(bob, "Alice", "Yes! Meet at the old bridge.")
    m = expect_msg(bob, "Alice", "Yes! Meet at the old bridge.")
    m.get_by_role("button", name="React", exact=True).click()
    m.get_by_role("button", name="React with 🎉").click()
    say(bob, "Great, I'll bring the dog 🐕")
    expect_msg(alice, "Bob", "the dog")
    expect(expect_msg(alice, "Alice", "old bridge").locator(".chip")).to_have_text("🎉 1", timeout=T)
    bob.page.type("#text", "on my w", delay=10)
    expect(alice.page.locator("#typing")).to_have_text("Bob is typing…", timeout=T)
    return alice, bob


