"""Fixtures of the browser tests: the freshly built relay on an ephemeral port
(restartable on the same port), Debian's Chromium driven by Playwright, and a
plain WebSocket client for eavesdropping."""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("WHISPER_BIN", ROOT / "target/debug/rtce2ee-whisper"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
OUT = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "web/browser/out"))
LOG = OUT / "relay-trace.log"

# Every plaintext and display name the tests type: none may reach the relay.
SECRETS: set[str] = set()


class Relay:
    """The relay binary at RUST_LOG=trace, its stderr appended to LOG."""

    def __init__(self):
        self.port = 0
        self.proc = None
        OUT.mkdir(parents=True, exist_ok=True)
        LOG.write_text("")

    def start(self):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "RUST_LOG": "trace",
            "SHUTDOWN_TIMEOUT_SECS": "2",
        }
        mark = LOG.stat().st_size
        log = open(LOG, "ab")
        self.proc = subprocess.Popen([str(BIN)], env=env, stdout=log, stderr=log, cwd=OUT)
        log.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(LOG, "rb") as f:
                f.seek(mark)
                m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                return
            assert self.proc.poll() is None, "relay exited at start"
            time.sleep(0.05)
        raise AssertionError("relay did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)

    def restart(self):
        self.stop()
        self.start()

    @property
    def url(self):
        return f"http://hub.lan:{self.port}/app/"


@pytest.fixture(scope="session")
def relay():
    assert BIN.exists(), f"build the relay first: {BIN}"
    r = Relay()
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                # hub.lan is not localhost: an insecure context, like a LAN address.
                "--host-resolver-rules=MAP hub.lan 127.0.0.1",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


class Person:
    """One person: a browser context of their own (own storage), one page."""

    def __init__(self, browser, relay, width=360, height=780, scheme="light", touch=False):
        self.ctx = browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme, has_touch=touch, is_mobile=touch
        )
        self.errors = []
        self.relay = relay
        self.page = self.tab()

    def tab(self):
        """Another tab of this person's browser (same storage)."""
        page = self.ctx.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page

    def close(self):
        self.ctx.close()


@pytest.fixture
def people(browser, relay):
    made = []

    def make(**kw):
        p = Person(browser, relay, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, n: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def invite_key(fragment: str) -> bytes:
    """The room key of an invite fragment: base64url(key + CRC-16/CCITT-FALSE(key)), checked here
    with Python's own CRC (binascii.crc_hqx), independently of the page's code."""
    raw = base64.urlsafe_b64decode(fragment + "=" * (-len(fragment) % 4))
    assert len(raw) == 34, fragment
    key, check = raw[:32], raw[32:]
    assert binascii.crc_hqx(key, 0xFFFF).to_bytes(2, "big") == check, "invite check"
    return key


def room_id_of_key(key_text: str) -> str:
    """The relay-side room id of an invite key (independently of the page's code)."""
    key = invite_key(key_text)
    rid = hkdf_sha256(key, b"rtce2ee-whisper/v1", b"room id", 12)
    return base64.urlsafe_b64encode(rid).decode().rstrip("=")


class Eavesdropper:
    """A plain WebSocket client in the room: records every frame it receives."""

    def __init__(self, port, room, user_id="eve", avatar=None):
        import websocket  # websocket-client

        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5)
        self.frames: list[str] = []
        self.lock = threading.Lock()
        self.ws.send(json.dumps({"type": "join", "data": {"room": room, "user": {"id": user_id, "name": "eve", "avatar": avatar}}}))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                frame = self.ws.recv()
            except Exception:
                return
            if isinstance(frame, str):
                with self.lock:
                    self.frames.append(frame)

    def send(self, obj):
        self.ws.send(json.dumps(obj))

    def all(self) -> list[dict]:
        with self.lock:
            return [json.loads(f) for f in self.frames]

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.frames)

    def close(self):
        self.ws.close()
