#!/usr/bin/env python3
"""The relay's container image as an OCI image layout, without a container engine.

    oci.py build  OUT --version V --revision R --epoch T [--source URL] --platform P=BINARY...
        writes OUT/ (oci-layout, index.json, blobs/sha256/...): one image index with an
        image FROM scratch per platform (P is linux/amd64, linux/arm64 or linux/arm/v7),
        whose single layer holds BINARY as /rtce2ee-whisper. Everything is reproducible:
        one tar entry owned by 0:0 with mtime T, gzip without name or time, JSON with
        sorted keys. Same inputs, same bytes.
    oci.py tar    OUT FILE --epoch T
        writes the layout OUT as one uncompressed tar FILE (what `podman load` and
        `skopeo copy oci-archive:FILE` read), reproducibly.
    oci.py verify OUT --version V --platforms P,P,P [--source URL] [--max-bytes N]
        checks the layout: every blob's digest and size, nothing unreferenced, the media
        types, one index with exactly those platforms, each config (entrypoint, numeric
        non-root user, port, env, labels, layer diff_ids), each layer (one static ELF of
        the platform's machine, owner 0:0). Prints each platform's compressed size and
        fails above N bytes.
    oci.py run    OUT PLATFORM [--runner CMD]
        unpacks PLATFORM's layer, runs its entrypoint as the config's user with only the
        config's Env plus a free PORT (under CMD, e.g. qemu-aarch64), and checks
        GET /health, GET /app/, a WebSocket join of two members and a relayed message,
        and `--health-check` (exit 0 while it runs, 1 after it stopped).
Python standard library only.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

NAME = "rtce2ee-whisper"
ENTRYPOINT = "/" + NAME
USER = "65532:65532"  # numeric: a scratch image has no /etc/passwd
PORT = 8080
# HOST: listen on the container's interfaces. LOG_FORMAT: container log drivers and
# collectors keep one record per line; JSON lines carry level and time as fields.
ENV = ["HOST=0.0.0.0", "LOG_FORMAT=json"]
# Docker reads a health check from the image config (OCI engines that don't, ignore it).
HEALTHCHECK = {
    "Test": ["CMD", ENTRYPOINT, "--health-check"],
    "Interval": 30 * 10**9,
    "Timeout": 5 * 10**9,
    "StartPeriod": 5 * 10**9,
    "Retries": 3,
}
TITLE = NAME
DESCRIPTION = "WebSocket relay for end-to-end encrypted chat rooms (static musl binary, FROM scratch)"
LICENSES = "MIT"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# OCI platform -> (config architecture, variant or None, ELF e_machine, ELF class)
PLATFORMS = {
    "linux/amd64": ("amd64", None, 0x3E, 2),
    "linux/arm64": ("arm64", None, 0xB7, 2),
    "linux/arm/v7": ("arm", "v7", 0x28, 1),
}


def fail(msg):
    print(f"FAIL {msg}", file=sys.stderr)
    sys.exit(1)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """Writes blobs into an OCI layout directory by digest."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def put(self, media_type, data, **extra):
        digest = sha256(data)
        path = os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])
        with open(path, "wb") as f:
            f.write(data)
        return dict(mediaType=media_type, digest=digest, size=len(data), **extra)


def layer_tar(binary, epoch):
    """An uncompressed tar with one entry: the binary as the entrypoint, 0:0, 0755."""
    with open(binary, "rb") as f:
        data = f.read()
    info = tarfile.TarInfo(ENTRYPOINT.lstrip("/"))
    info.size, info.mode, info.mtime = len(data), 0o755, epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # No file name and mtime 0 in the header (like gzip -n).
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def labels(args):
    out = {
        "org.opencontainers.image.title": TITLE,
        "org.opencontainers.image.description": DESCRIPTION,
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.created": rfc3339(args.epoch),
        "org.opencontainers.image.licenses": LICENSES,
    }
    if args.source:
        out["org.opencontainers.image.source"] = args.source
    return out


def build(args):
    if os.path.exists(args.out) and os.listdir(args.out):
        fail(f"{args.out} exists and is not empty")
    layout = Layout(args.out)
    created = rfc3339(args.epoch)
    manifests = []
    for spec in args.platform:
        platform, _, binary = spec.partition("=")
        if platform not in PLATFORMS or not binary:
            fail(f"bad --platform {spec!r} (want one of {', '.join(PLATFORMS)}=BINARY)")
        arch, variant, _, _ = PLATFORMS[platform]
        tar = layer_tar(binary, args.epoch)
        layer = layout.put(MT_LAYER, gzip_bytes(tar))
        config = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {
                "User": USER,
                "ExposedPorts": {f"{PORT}/tcp": {}},
                "Env": ENV,
                "Entrypoint": [ENTRYPOINT],
                "WorkingDir": "/",
                "StopSignal": "SIGTERM",
                "Labels": labels(args),
                "Healthcheck": HEALTHCHECK,
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
            "history": [{"created": created, "created_by": f".ci/oci.py: {ENTRYPOINT}, a static musl binary"}],
        }
        if variant:
            config["variant"] = variant
        cfg = layout.put(MT_CONFIG, canonical(config))
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cfg, "layers": [layer]}
        plat = {"architecture": arch, "os": "linux"}
        if variant:
            plat["variant"] = variant
        manifests.append(layout.put(MT_MANIFEST, canonical(manifest), platform=plat))
    annotations = {k: v for k, v in labels(args).items() if k != "org.opencontainers.image.description"}
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests, "annotations": annotations}
    top = layout.put(MT_INDEX, canonical(index), annotations={"org.opencontainers.image.ref.name": args.version})
    with open(os.path.join(args.out, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [top]}))
    with open(os.path.join(args.out, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    print(f"wrote {args.out}: index {top['digest']}")


def write_tar(args):
    """The layout as one tar: sorted names, 0:0, fixed mtime, fixed modes."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(args.out):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            entries.append((os.path.relpath(full, args.out), full))
    with open(args.file, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, full in sorted(entries):
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = args.epoch, 0, 0, "", ""
            if os.path.isdir(full):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, os.path.getsize(full)
                with open(full, "rb") as src:
                    tar.addfile(info, src)
    print(f"wrote {args.file} ({os.path.getsize(args.file)} bytes)")


class Reader:
    """Reads a layout back, checking every blob it is asked for."""

    def __init__(self, root):
        self.root = root
        self.seen = set()

    def blob(self, desc, media_type):
        for key in ("mediaType", "digest", "size"):
            if key not in desc:
                fail(f"descriptor without {key}: {desc}")
        if desc["mediaType"] != media_type:
            fail(f"{desc['digest']}: media type {desc['mediaType']}, want {media_type}")
        algo, _, hexd = desc["digest"].partition(":")
        if algo != "sha256" or len(hexd) != 64:
            fail(f"unexpected digest {desc['digest']}")
        path = os.path.join(self.root, "blobs", "sha256", hexd)
        if not os.path.isfile(path):
            fail(f"missing blob {desc['digest']}")
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != desc["size"]:
            fail(f"{desc['digest']}: size {len(data)}, descriptor says {desc['size']}")
        if sha256(data) != desc["digest"]:
            fail(f"{desc['digest']}: content hashes to {sha256(data)}")
        self.seen.add(hexd)
        return data

    def json(self, desc, media_type):
        doc = json.loads(self.blob(desc, media_type))
        if media_type != MT_CONFIG and (doc.get("schemaVersion") != 2 or doc.get("mediaType") != media_type):
            fail(f"{desc['digest']}: schemaVersion/mediaType wrong in {media_type} document")
        return doc

    def index(self):
        with open(os.path.join(self.root, "oci-layout"), "rb") as f:
            if json.load(f).get("imageLayoutVersion") != "1.0.0":
                fail("oci-layout: imageLayoutVersion is not 1.0.0")
        with open(os.path.join(self.root, "index.json"), "rb") as f:
            top = json.load(f)
        if top.get("schemaVersion") != 2 or len(top.get("manifests", [])) != 1:
            fail("index.json: want schemaVersion 2 and exactly one entry")
        return top["manifests"][0]

    def images(self):
        """(platform, manifest, config, layer bytes, compressed size) for each image."""
        entry = self.index()
        idx = self.json(entry, MT_INDEX)
        out = []
        for m in idx["manifests"]:
            p = m.get("platform") or fail(f"{m['digest']}: no platform")
            plat = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
            manifest = self.json(m, MT_MANIFEST)
            config = self.json(manifest["config"], MT_CONFIG)
            layers = [self.blob(d, MT_LAYER) for d in manifest["layers"]]
            size = m["size"] + manifest["config"]["size"] + sum(d["size"] for d in manifest["layers"])
            out.append((plat, manifest, config, layers, size))
        return out

    def unreferenced(self):
        have = set(os.listdir(os.path.join(self.root, "blobs", "sha256")))
        return sorted(have - self.seen)


def layer_members(layer):
    raw = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return raw, [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]


def check_elf(data, plat):
    _, _, machine, elf_class = PLATFORMS[plat]
    if data[:4] != b"\x7fELF" or data[4] != elf_class:
        fail(f"{plat}: entrypoint is not an ELF of class {elf_class}")
    little = data[5] == 1
    order = "little" if little else "big"
    e_machine = int.from_bytes(data[18:20], order)
    if e_machine != machine:
        fail(f"{plat}: ELF machine {e_machine:#x}, want {machine:#x}")
    # Program headers: a PT_INTERP (3) would name a dynamic loader scratch does not have.
    wide = elf_class == 2
    phoff = int.from_bytes(data[32:40] if wide else data[28:32], order)
    phentsize = int.from_bytes(data[54:56] if wide else data[42:44], order)
    phnum = int.from_bytes(data[56:58] if wide else data[44:46], order)
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off : off + 4], order) == 3:
            fail(f"{plat}: the binary has a PT_INTERP: not static")


def verify(args):
    want_platforms = sorted(args.platforms.split(","))
    r = Reader(args.out)
    images = r.images()
    got = sorted(p for p, *_ in images)
    if got != want_platforms:
        fail(f"platforms {got}, want {want_platforms}")
    extra = r.unreferenced()
    if extra:
        fail(f"unreferenced blobs: {extra}")
    print(f"OK   layout {args.out}: every blob's digest and size, media types, platforms {', '.join(got)}")
    failed = False
    for plat, _, config, layers, size in sorted(images):
        arch, variant, _, _ = PLATFORMS[plat]
        if (config.get("os"), config.get("architecture"), config.get("variant")) != ("linux", arch, variant):
            fail(f"{plat}: config says {config.get('os')}/{config.get('architecture')}/{config.get('variant')}")
        c = config.get("config", {})
        if c.get("Entrypoint") != [ENTRYPOINT]:
            fail(f"{plat}: Entrypoint {c.get('Entrypoint')}")
        uid, _, gid = str(c.get("User", "")).partition(":")
        if not (uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0):
            fail(f"{plat}: User {c.get('User')!r} is not a numeric non-root uid:gid")
        if f"{PORT}/tcp" not in c.get("ExposedPorts", {}):
            fail(f"{plat}: ExposedPorts {c.get('ExposedPorts')}")
        if c.get("Healthcheck", {}).get("Test") != ["CMD", ENTRYPOINT, "--health-check"]:
            fail(f"{plat}: Healthcheck {c.get('Healthcheck')}")
        if "HOST=0.0.0.0" not in c.get("Env", []):
            fail(f"{plat}: Env {c.get('Env')}")
        lab = c.get("Labels", {})
        want = {"org.opencontainers.image.version": args.version, "org.opencontainers.image.licenses": LICENSES}
        if args.source:
            want["org.opencontainers.image.source"] = args.source
        for k, v in want.items():
            if lab.get(k) != v:
                fail(f"{plat}: label {k}={lab.get(k)!r}, want {v!r}")
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(layers) != 1 or len(diff_ids) != 1:
            fail(f"{plat}: want one layer, have {len(layers)} (diff_ids {len(diff_ids)})")
        raw, members = layer_members(layers[0])
        if sha256(raw) != diff_ids[0]:
            fail(f"{plat}: diff_id {diff_ids[0]} does not match the layer's tar {sha256(raw)}")
        if [m.name for m, _ in members] != [ENTRYPOINT.lstrip("/")]:
            fail(f"{plat}: layer entries {[m.name for m, _ in members]}")
        m, data = members[0]
        if not m.isfile() or m.mode & 0o111 != 0o111 or (m.uid, m.gid) != (0, 0):
            fail(f"{plat}: entrypoint entry mode {m.mode:o} owner {m.uid}:{m.gid}")
        check_elf(data, plat)
        verdict = "OK  " if size <= args.max_bytes else "FAIL"
        failed |= size > args.max_bytes
        print(
            f"{verdict} {plat:13} user {c['User']}, port {PORT}/tcp, env {' '.join(c['Env'])}; "
            f"binary {len(data):,} B, layer {len(layers[0]):,} B, compressed image {size:,} B "
            f"({size / 1048576:.2f} MiB, limit {args.max_bytes / 1048576:.2f} MiB)"
        )
    if failed:
        fail("an image is over the size limit")


# --- run ---------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Straight to loopback, whatever proxy the environment names.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port, path):
    with OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status, resp.headers, resp.read()


def ws_join_check(port):
    """Two members join one room; the second sees both, the first sees it join, and a
    message reaches both. Uses the system test's stdlib WebSocket client."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "system-test"))
    import ws_client

    def recv_json(reader, sock):
        while True:
            op, data = reader.frame()
            if op == 0x9:
                ws_client.send(sock, 0xA, data)
            elif op == 0x1:
                return json.loads(data)
            elif op == 0x8:
                raise EOFError(f"closed: {ws_client.close_info(data)}")

    def join(user):
        s, status, _, rest = ws_client.connect("127.0.0.1", port)
        if " 101 " not in status + " ":
            fail(f"WebSocket handshake: {status}")
        frame = {"type": "join", "data": {"room": "image-check", "user": {"id": user, "name": user, "avatar": None}}}
        ws_client.send(s, 0x1, json.dumps(frame).encode())
        return s, ws_client.Reader(s, rest)

    a, ra = join("alice")
    got = recv_json(ra, a)
    if got.get("type") != "userList" or [u["id"] for u in got["users"]] != ["alice"]:
        fail(f"first join answered {got}")
    b, rb = join("bob")
    got = recv_json(rb, b)
    if got.get("type") != "userList" or [u["id"] for u in got["users"]] != ["alice", "bob"]:
        fail(f"second join answered {got}")
    got = recv_json(ra, a)
    if got.get("type") != "userJoined" or got["user"]["id"] != "bob":
        fail(f"first member was told {got}")
    ws_client.send(b, 0x1, json.dumps({"type": "message", "data": {"content": "aXY.Y2lwaGVydGV4dA"}}).encode())
    for who, r, s in (("alice", ra, a), ("bob", rb, b)):
        got = recv_json(r, s)
        if got.get("type") != "message" or got.get("content") != "aXY.Y2lwaGVydGV4dA":
            fail(f"{who} got {got} instead of the message")
    for s in (a, b):
        ws_client.send(s, 0x8, b"\x03\xe8")
        s.close()


def run(args):
    r = Reader(args.out)
    images = {p: (config, layers) for p, _, config, layers, _ in r.images()}
    if args.platform not in images:
        fail(f"no image for {args.platform}")
    config, layers = images[args.platform]
    c = config["config"]
    root = tempfile.mkdtemp(prefix="oci-run-")
    os.chmod(root, 0o755)  # the config's user must reach the entrypoint
    try:
        _, members = layer_members(layers[0])
        for m, data in members:
            path = os.path.join(root, m.name)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, m.mode)
        exe = os.path.join(root, c["Entrypoint"][0].lstrip("/"))
        # The image's own health check command, run the way an engine would (exec form).
        test = c.get("Healthcheck", {}).get("Test", [])
        if test[:1] != ["CMD"] or test[1:2] != c["Entrypoint"]:
            fail(f"{args.platform}: Healthcheck {test} is not an exec of the entrypoint")
        runner = args.runner.split() if args.runner else []
        health_cmd = runner + [exe] + test[2:]
        port = free_port()
        env = dict(e.split("=", 1) for e in c["Env"])
        env["PORT"] = str(port)
        uid, gid = (int(x) for x in c["User"].split(":"))
        drop = {"user": uid, "group": gid, "extra_groups": []} if os.getuid() == 0 else {}
        who = f"uid {uid}" if drop else f"uid {os.getuid()} (not root: cannot switch to {c['User']})"
        label = f"{args.platform} ({' '.join(runner) or 'native'}, {who})"
        started = time.monotonic()
        proc = subprocess.Popen(
            runner + [exe], env=env, cwd=root, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, **drop
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    status, _, body = http_get(port, "/health")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        fail(f"{label}: the relay did not answer ({proc.poll()=})")
                    time.sleep(0.1)
            health = json.loads(body)
            if status != 200 or health.get("status") != "healthy":
                fail(f"{label}: /health {status} {body[:200]!r}")
            print(f"     {label}: /health 200 healthy after {time.monotonic() - started:.1f} s")
            status, headers, body = http_get(port, "/app/")
            if status != 200 or "text/html" not in headers.get("Content-Type", "") or b"<html" not in body.lower():
                fail(f"{label}: /app/ {status} {headers.get('Content-Type')}")
            print(f"     {label}: /app/ 200 {headers.get('Content-Type')}, {len(body):,} B")
            ws_join_check(port)
            print(f"     {label}: WebSocket: two members joined one room, the message reached both")
            hc = subprocess.run(health_cmd, env=env, cwd=root, capture_output=True, timeout=30, **drop)
            if hc.returncode != 0:
                fail(f"{label}: the image's health check {test[1:]} exited {hc.returncode}: {hc.stderr.decode(errors='replace').strip()}")
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        lines = err.decode(errors="replace").splitlines()
        if proc.returncode != 0:
            fail(f"{label}: exited {proc.returncode} on SIGTERM; log:\n" + "\n".join(lines[-20:]))
        if not lines or not all(line.startswith("{") and json.loads(line).get("level") for line in lines):
            fail(f"{label}: log lines are not JSON lines:\n" + "\n".join(lines[:5]))
        hc = subprocess.run(health_cmd, env=env, cwd=root, capture_output=True, timeout=30, **drop)
        if hc.returncode != 1 or len(hc.stderr.decode().splitlines()) != 1:
            fail(f"{label}: --health-check on a stopped relay exited {hc.returncode}: {hc.stderr!r}")
        print(
            f"OK   {label}: health check ({' '.join(test[1:])}) 0 while up, 1 once stopped ({hc.stderr.decode().strip()}); "
            f"clean exit on SIGTERM, {len(lines)} JSON log lines"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    b.add_argument("--version", required=True)
    b.add_argument("--revision", required=True)
    b.add_argument("--epoch", type=int, required=True)
    b.add_argument("--source", default="")
    b.add_argument("--platform", action="append", required=True)
    t = sub.add_parser("tar")
    t.add_argument("out")
    t.add_argument("file")
    t.add_argument("--epoch", type=int, required=True)
    v = sub.add_parser("verify")
    v.add_argument("out")
    v.add_argument("--version", required=True)
    v.add_argument("--platforms", default=",".join(PLATFORMS))
    v.add_argument("--source", default="")
    v.add_argument("--max-bytes", type=int, default=1 << 20)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("platform", choices=list(PLATFORMS))
    r.add_argument("--runner", default="")
    args = ap.parse_args()
    {"build": build, "tar": write_tar, "verify": verify, "run": run}[args.cmd](args)


if __name__ == "__main__":
    main()
