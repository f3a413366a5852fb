"""Peer servers for the benchmark: the same reply as chatbot-sse's, served three other ways.

Each peer is an ASGI app started by `bench/run.py` in its own uvicorn process. All
of them answer `POST /chat` (form body `message=...`) with the 22-event reply
that chatbot-sse's simulated engine gives to the benchmark message (see
`_reply.py`). `BENCH_PACE` (seconds, default 0) paces them exactly like the
simulated engine with `TOKEN_DELAY`: `connected` at once, then a sleep between
consecutive `message` chunks, `completed` right after the last chunk.
"""
