# chatbot-sse: production image (gunicorn + uvicorn workers, SQLite in /app/data by default).
# The first stage builds the wheel; with `--build-arg COMPILED=1` the reply's path is
# compiled by mypyc (pyproject's `hooks.mypyc`: ~2.5 min, a C compiler in that stage only).
# Python 3.13, as `make` picks when it can (3.11+ works; for speed they measured alike).
FROM python:3.13-slim AS build

ARG COMPILED=0
ENV PIP_NO_CACHE_DIR=1
RUN if [ "$COMPILED" = 1 ]; then apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN if [ "$COMPILED" = 1 ]; then export HATCH_BUILD_HOOK_ENABLE_MYPYC=1; fi \
    && pip wheel --no-deps -w /wheels .

FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 PORT=8000 STORE_URL=sqlite:////app/data/chatbot.db

WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --home /app chatbot && mkdir -p /app/data && chown chatbot /app/data
COPY gunicorn.conf.py ./

USER chatbot
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "chatbot_sse.main:app"]
