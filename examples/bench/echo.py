"""A minimal, fast HTTP/1.1 keep-alive server for latency benchmarks (stdlib asyncio, no framework),
so the numbers measure the mesh, not the app. Answers every request with 200 and a short body."""
import asyncio
import os

BODY = b'{"ok":true}'
RESP = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(BODY)).encode()
        + b"\r\nx-served-by: " + os.environ.get("SERVED_BY", "echo").encode() + b"\r\n\r\n" + BODY)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            # bodies are not expected (GET); a content-length body would be skipped here
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    self.buf = self.buf[int(line.split(b":", 1)[1]):]
            self.t.write(RESP)


async def main():
    port = int(os.environ.get("PORT", "8080"))
    server = await asyncio.get_running_loop().create_server(Echo, "0.0.0.0", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
