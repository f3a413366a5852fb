-- POST /chat with a form body, as a browser form or curl -d would.
-- The message is chatbot-sse's benchmark message: its simulated reply is 20 chunks,
-- so every server answers with 22 events (connected, 20 message, completed).
wrk.method = "POST"
wrk.body = "message=nice"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
