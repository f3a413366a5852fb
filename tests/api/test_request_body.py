"""A `POST /chat` body however it arrives on the wire: in pieces, chunked, too big, cut short."""

from __future__ import annotations

import socket
import time

import orjson

from livesupport import ServerProcess

LIMIT = 1024 * 1024  # MAX_BODY_BYTES's default


def _exchange(server: ServerProcess, pieces: list[bytes], pause: float = 0.05) -> bytes:
    """Send `pieces` with a pause between them (each its own TCP segment), then read it all."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered (and closed) before the body was through
            time.sleep(pause)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"event: completed" in answer or b'"error"' in answer:
                    break
        except ConnectionResetError:  # closed with our body unread: its answer came first
            pass
    return answer


def _head(length: int | None, media: bytes = b"application/json") -> bytes:
    size = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: %s\r\n%s\r\n\r\n"
        % (
            media,
            size,
        )
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _content(answer: bytes) -> str:
    for line in answer.split(b"\n"):
        if line.startswith(b"data: ") and b'"completed"' in line:
            content: str = orjson.loads(line[6:])["content"]
            return content
    raise AssertionError(f"no completed event in {answer[:300]!r}")


def test_a_body_in_several_pieces_is_read_whole(server: ServerProcess) -> None:
    body = b'{"message": "tell me a joke"}'
    answer = _exchange(server, [_head(len(body)), body[:9], body[9:20], body[20:]])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert _content(answer)  # the reply to the whole message, not to a piece of it
    whole = _exchange(server, [_head(len(body)) + body])
    assert _content(answer) == _content(whole)


def test_a_chunked_body_is_read_whole(server: ServerProcess) -> None:
    body = b"message=tell+me+a+joke"
    chunks = [_chunk(body[:7]), _chunk(body[7:]), b"0\r\n\r\n"]
    head = _head(None, b"application/x-www-form-urlencoded")
    answer = _exchange(server, [head, *chunks])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    whole = _exchange(server, [_head(len(body), b"application/x-www-form-urlencoded") + body])
    assert _content(answer) == _content(whole)


def test_a_chunked_body_over_the_limit_is_refused_as_it_grows(server: ServerProcess) -> None:
    """No Content-Length to refuse it by: the limit is counted as the pieces come."""
    piece = b"a" * (256 * 1024)
    chunks = [_chunk(b"message=" + piece)] + [_chunk(piece)] * 4 + [b"0\r\n\r\n"]
    answer = _exchange(server, [_head(None, b"application/x-www-form-urlencoded"), *chunks], 0.01)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"payload_too_large" in payload
    assert 8 + 5 * len(piece) > LIMIT


def test_a_body_cut_short_is_not_a_reply_and_the_server_goes_on(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_head(100) + b'{"message": "hel')
        time.sleep(0.1)
    body = b'{"message": "still there?"}'
    answer = _exchange(server, [_head(len(body)) + body])
    assert _content(answer)
    assert "Traceback" not in server.log()
