# chatbot-sse: production image (gunicorn + uvicorn workers, SQLite in /app/data by default).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 PORT=8000 STORE_URL=sqlite:////app/data/chatbot.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --system --home /app chatbot && mkdir -p /app/data \
    && chown chatbot /app/data
COPY gunicorn.conf.py ./

USER chatbot
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "chatbot_sse.main:app"]
