"""`python -m chatbot_sse.loadtest`: the same command as `chatbot-sse loadtest`."""

from chatbot_sse.loadtest.cli import main

main()
