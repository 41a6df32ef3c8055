#!/usr/bin/env python3
"""Minimal WebSocket client for the guest test (python3-minimal: no json, no websockets).

    ws_client.py abuse HOST PORT   one invalid-JSON text frame; expects an INVALID_JSON
                                   error, a 1008 close, then HTTP 429 IP_BLOCKED on reconnect
    ws_client.py hold HOST PORT    connects, prints "connected", answers pings, and waits
                                   for the server's close frame (e.g. 1001 on shutdown)
    ws_client.py history HOST PORT ROOM USER SINCE N
                                   joins ROOM as USER with `since` (SINCE "@all" sends "",
                                   anything else is sent as the id), prints each replayed
                                   frame ("ws: replayed <text>") and the history frame
                                   ("ws: history <text>"), then sends N messages and prints
                                   each echo ("ws: echo <text>"), exactly as received
Exit status 0 when the expected happened. Prints one "ws: ..." line per event.
"""
import base64
import hashlib
import os
import re
import socket
import struct
import sys
import time


def say(*a):
    print("ws:", *a, flush=True)


def connect(host, port, timeout=20.0):
    s = socket.create_connection((host, port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if " 101 " in status + " ":
        want = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        if headers.get("sec-websocket-accept") != want:
            say("bad Sec-WebSocket-Accept", headers.get("sec-websocket-accept"))
            sys.exit(1)
    return s, status, headers, rest


class Reader:
    def __init__(self, sock, rest=b""):
        self.sock, self.buf = sock, rest

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        b0, b1 = self.need(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.need(8))
        mask = self.need(4) if b1 & 0x80 else None
        data = self.need(n)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return opcode, data


def send(sock, opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))


def close_info(data):
    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
    return code, data[2:].decode("utf-8", "replace")


def abuse(host, port):
    s, status, _, rest = connect(host, port)
    say("handshake:", status)
    if " 101 " not in status + " ":
        return 1
    send(s, 0x1, b"this is not json")
    r, got_error, close_code = Reader(s, rest), False, None
    try:
        while True:
            op, data = r.frame()
            if op == 0x1:
                say("text frame:", data.decode("utf-8", "replace"))
                got_error |= b'"INVALID_JSON"' in data
            elif op == 0x8:
                close_code, reason = close_info(data)
                say("close frame:", close_code, reason)
                send(s, 0x8, data[:2])
                break
            elif op == 0x9:
                send(s, 0xA, data)
    except (EOFError, OSError) as e:
        say("read ended:", e)
    s.close()
    time.sleep(0.5)
    s2, status2, headers2, rest2 = connect(host, port)
    say("reconnect:", status2, "Retry-After:", headers2.get("retry-after"), rest2[:200].decode("utf-8", "replace"))
    s2.close()
    ok = got_error and close_code == 1008 and " 429 " in status2 + " " and b"IP_BLOCKED" in rest2
    say("abuse result:", "ok" if ok else "unexpected")
    return 0 if ok else 1


def hold(host, port):
    s, status, _, rest = connect(host, port, timeout=120)
    say("handshake:", status)
    if " 101 " not in status + " ":
        return 1
    say("connected")
    r = Reader(s, rest)
    try:
        while True:
            op, data = r.frame()
            if op == 0x9:
                send(s, 0xA, data)
            elif op == 0x8:
                code, reason = close_info(data)
                say("server closed with", code, reason)
                send(s, 0x8, data[:2])
                s.close()
                return 0 if code == 1001 else 1
    except (EOFError, OSError) as e:
        say("read ended without a close frame:", e)
        return 1


def text_frames(r, s):
    """Text frames as they come (pings answered); stops at a close frame."""
    while True:
        op, data = r.frame()
        if op == 0x9:
            send(s, 0xA, data)
        elif op == 0x8:
            say("server closed with", *close_info(data))
            return
        elif op == 0x1:
            yield data.decode("utf-8")


def history(host, port, room, user, since, n):
    s, status, _, rest = connect(host, port)
    say("handshake:", status)
    if " 101 " not in status + " ":
        return 1
    since = "" if since == "@all" else since
    join = (
        '{"type":"join","data":{"room":"%s","user":{"id":"%s","name":"%s","avatar":null},'
        '"since":"%s"}}' % (room, user, user, since)
    )
    send(s, 0x1, join.encode())
    frames = text_frames(Reader(s, rest), s)
    try:
        first = next(frames)
        say("joined:", first)
        if not first.startswith('{"type":"userList"'):
            return 1
        for text in frames:
            if text.startswith('{"type":"history"'):
                say("history", text)
                break
            say("replayed", text)
        else:
            return 1
        for i in range(n):
            content = base64.b64encode(("systest %s %d" % (user, i)).encode()).decode()
            send(s, 0x1, ('{"type":"message","data":{"content":"%s"}}' % content).encode())
            for text in frames:
                if re.match(r'\{"type":"message",', text) and content in text:
                    say("echo", text)
                    break
            else:
                return 1
    except (EOFError, OSError, StopIteration) as e:
        say("read ended:", e)
        return 1
    send(s, 0x8, struct.pack("!H", 1000))
    s.close()
    return 0


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "history":
        room, user, since, n = sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7])
        sys.exit(history(host, port, room, user, since, n))
    sys.exit({"abuse": abuse, "hold": hold}[mode](host, port))
