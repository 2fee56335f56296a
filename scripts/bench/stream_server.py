# Test and benchmark server for pods (python3 standard library only), on
# port 9000: `GET /blob` streams 50 MiB of a known pattern, `POST /sha`
# answers the SHA-256 of the body, `GET /headers` answers the request's
# headers as JSON, and a WebSocket upgrade echoes frames.
# Used by cli/tests/network.rs and scripts/bench/proxy.sh.
import base64, hashlib, json, socketserver, struct
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class H(socketserver.StreamRequestHandler):
    def handle(self):
        method, path, _ = self.rfile.readline().decode().split(" ", 2)
        hdr = {}
        while True:
            l = self.rfile.readline().decode()
            if l in ("\r\n", "\n", ""):
                break
            k, v = l.split(":", 1)
            hdr[k.strip().lower()] = v.strip()
        if hdr.get("upgrade", "").lower() == "websocket":
            acc = base64.b64encode(hashlib.sha1(hdr["sec-websocket-key"].encode() + GUID).digest()).decode()
            self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % acc).encode())
            self.wfile.flush()
            while True:
                h = self.rfile.read(2)
                if len(h) < 2:
                    return
                op, n = h[0] & 15, h[1] & 127
                if n == 126:
                    n = struct.unpack(">H", self.rfile.read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self.rfile.read(8))[0]
                mask = self.rfile.read(4)
                data = bytearray(self.rfile.read(n))
                for i in range(n):
                    data[i] ^= mask[i % 4]
                if op == 8:
                    return
                size = bytes([n]) if n < 126 else (bytes([126]) + struct.pack(">H", n) if n < 65536 else bytes([127]) + struct.pack(">Q", n))
                self.wfile.write(bytes([0x80 | op]) + size + bytes(data))
                self.wfile.flush()
        elif method == "GET" and path == "/blob":
            chunk = bytes(range(256)) * 4096
            self.wfile.write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (50 * len(chunk))).encode())
            for _ in range(50):
                self.wfile.write(chunk)
        elif method == "GET" and path == "/headers":
            body = json.dumps(hdr, sort_keys=True).encode()
            self.wfile.write(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)).encode() + body)
        elif method == "POST" and path == "/sha":
            n, h = int(hdr.get("content-length", "0")), hashlib.sha256()
            while n > 0:
                b = self.rfile.read(min(n, 1 << 20))
                if not b:
                    break
                h.update(b)
                n -= len(b)
            body = h.hexdigest().encode()
            self.wfile.write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)).encode() + body)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 9000), H).serve_forever()
