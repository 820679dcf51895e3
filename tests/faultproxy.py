"""A TCP fault proxy for tests (RELIABILITY.md §2.4, §5.2): toxiproxy is not
available here, so ~100 lines of asyncio stand in for it.

It runs its own event loop in a thread, listens on a free loopback port and
forwards to the server. Faults are rules, consumed in order, each matching a
request by the start of its request line (``b"POST /api/v1/sync/push"``):

- ``cut_request``: forward only the first ``after`` bytes of the request, then
  hang up both sides (an upload cut mid-way; the server stores nothing).
- ``cut_body``: the same, ``after`` bytes into the request's *body*: the cut
  point is the header length (found in the stream, never assumed) plus
  ``after``. ``body_cuts`` records (header length, body length, bytes of
  the body really forwarded, counted as written) for each, so a test can
  assert the body was cut.
- ``drop_response``: forward the whole request, let the server answer (so it
  has committed), then swallow the answer and hang up: the client cannot know
  whether its push landed.
- ``cut_response``: pass only the first ``after`` bytes of the answer, then
  hang up (a download cut mid-page).
- ``hold_response``: forward the whole request, let the server answer (so it
  has committed), and hold the answer: nothing of it reaches the client,
  whose connection stays open until the client goes away (killed). The
  ``holding`` event is set once an answer is held, so a test can kill the
  client exactly while it waits for an answer the server has already sent.

Random faults (``p_cut``, ``p_drop`` with a ``seed``) apply to any request
when no rule matches. ``max_body`` answers 413 itself to any request whose
Content-Length is larger, as a reverse proxy with a smaller body limit than
the server's would. ``stats`` counts what happened.
"""
import asyncio
import random
import socket
import threading
from collections import Counter


class FaultProxy:
    """:param upstream_port: the server's port on 127.0.0.1."""

    def __init__(self, upstream_port, *, p_cut=0.0, p_drop=0.0, seed=0, match=b"",
                 max_body=None):
        self.upstream_port = upstream_port
        self.max_body = max_body
        self.rules = []  # [mode, prefix, after, count]
        self.p_cut, self.p_drop, self.match = p_cut, p_drop, match
        self.rng = random.Random(seed)
        self.stats = Counter()
        self.cut_answers = []  # what the client got of each cut answer
        self.body_cuts = []    # cut_body: (header length, Content-Length, body bytes sent)
        self.holding = threading.Event()  # hold_response: an answer is being held
        self.lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def add(self, mode, prefix, *, after=0, count=1):
        """Apply ``mode`` to the next ``count`` requests starting with ``prefix``."""
        assert mode in ("cut_request", "cut_body", "drop_response", "cut_response",
                        "hold_response")
        with self.lock:
            self.rules.append([mode, prefix, after, count])
        return self

    def _choose(self, head):
        with self.lock:
            for rule in self.rules:
                mode, prefix, after, count = rule
                if count > 0 and head.startswith(prefix):
                    rule[3] -= 1
                    return mode, after
            if head.startswith(self.match) and head[:1].isalpha():
                x = self.rng.random()
                if x < self.p_drop:
                    return "drop_response", 0
                if x < self.p_drop + self.p_cut:
                    return "cut_request", self.rng.randint(1, 400)
        return None, 0

    @staticmethod
    def _content_length(head):
        for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value.strip() or 0)
        return 0

    def _too_large(self, head):
        if not head[:1].isalpha():
            return False
        for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
                return length if length > self.max_body else 0
        return 0

    async def _handle(self, client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        state = {"drop": False, "cut_response": None, "hold": False}

        async def upstream():
            sent_of_request, cut_after = 0, None
            body_cut, head = None, b""   # cut_body: bytes into the body; headers so far
            cut_index, written = None, 0  # cut_body: its body_cuts entry; bytes forwarded
            try:
                while data := await client_r.read(65536):
                    if self.max_body is not None and self._too_large(data):
                        self.stats["too_large"] += 1
                        # Read the whole body first, as a real proxy would.
                        header, _, body = data.partition(b"\r\n\r\n")
                        missing = self._too_large(data) - len(body)
                        while missing > 0 and (more := await client_r.read(65536)):
                            missing -= len(more)
                        client_w.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0"
                                       b"\r\nConnection: close\r\n\r\n")
                        await client_w.drain()
                        client_w.close()
                        break
                    if cut_after is None and body_cut is None:
                        mode, after = self._choose(data)
                        if mode == "cut_request":
                            cut_after = after
                            self.stats["cut_request"] += 1
                        elif mode == "cut_body":
                            body_cut = after
                            self.stats["cut_body"] += 1
                        elif mode == "drop_response":
                            state["drop"] = True
                            self.stats["drop_response"] += 1
                        elif mode == "hold_response":
                            state["hold"] = True
                            self.stats["hold_response"] += 1
                        elif mode == "cut_response":
                            state["cut_response"] = after
                            with self.lock:
                                state["cut_index"] = len(self.cut_answers)
                                self.cut_answers.append(b"")
                            self.stats["cut_response"] += 1
                    if body_cut is not None and cut_after is None:
                        head += data
                        end = head.find(b"\r\n\r\n")
                        if end < 0:  # headers not complete yet: all of it goes
                            up_w.write(data)
                            await up_w.drain()
                            sent_of_request += len(data)
                            written += len(data)
                            continue
                        header_len = end + 4
                        cut_after = header_len + body_cut
                        length = self._content_length(head)
                        with self.lock:
                            cut_index = len(self.body_cuts)
                            self.body_cuts.append((header_len, length, None))
                    if cut_after is not None:
                        room = cut_after - sent_of_request
                        up_w.write(data[:max(0, room)])
                        written += len(data[:max(0, room)])
                        await up_w.drain()
                        sent_of_request += len(data)
                        if sent_of_request >= cut_after:
                            break
                        continue
                    up_w.write(data)
                    await up_w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if cut_index is not None:  # what really went upstream of the body
                    header_len, length, _ = self.body_cuts[cut_index]
                    self.body_cuts[cut_index] = (header_len, length, written - header_len)
                if cut_after is not None:
                    client_w.close()
                up_w.close()

        async def downstream():
            sent = 0
            try:
                while data := await up_r.read(65536):
                    if state["drop"]:
                        break  # the server has answered, so it has committed: swallow it
                    if state["hold"]:
                        # Answered, so committed: keep it from the client, and
                        # the connection open, until the client hangs up.
                        self.holding.set()
                        continue
                    if state["cut_response"] is not None:
                        # Exactly `after` bytes of the answer, however it arrives.
                        part = data[:max(0, state["cut_response"] - sent)]
                        client_w.write(part)
                        await client_w.drain()
                        sent += len(part)
                        self.cut_answers[state["cut_index"]] += part
                        if sent >= state["cut_response"]:
                            break
                        continue
                    client_w.write(data)
                    await client_w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                client_w.close()
                up_w.close()

        await asyncio.gather(upstream(), downstream())

    def start(self):
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)
        return self

    def stop(self):
        async def close():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.thread:
            try:
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
