#!/usr/bin/env python3
"""Drives CAIO's OpenAI-compatible front door with the official `openai` package.

    python3 scripts/openai-e2e.py --base-url http://127.0.0.1:8080/v1 --api-key caio_... \
        --chat-model fast-chat --embedding-model embeddings

Checks: model listing, a chat completion, the same chat streamed (the deltas concatenate to the
non-streamed answer, the stream ends), embeddings for a string and a list, an unknown model as
openai.NotFoundError, and CAIO's decision id header on raw responses. Exit 0 when every check
passed, 1 with the failures listed otherwise, 3 when the `openai` package is missing.
"""
import argparse
import sys

try:
    import openai
except ImportError:  # pragma: no cover - reported to the caller
    print("the `openai` package is not installed (pip install openai)", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--chat-model", required=True)
    p.add_argument("--embedding-model", required=True)
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=20)
    failures = []

    def check(name, ok, detail=""):
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
        if not ok:
            failures.append(name)

    models = [m.id for m in client.models.list()]
    check("models.list names the chat model", a.chat_model in models, str(models))

    messages = [{"role": "user", "content": "tell me something nice"}]
    raw = client.chat.completions.with_raw_response.create(model=a.chat_model, messages=messages)
    decision = raw.headers.get("x-caio-decision-id", "")
    check("chat carries x-caio-decision-id", decision.startswith("sha256:"), decision)
    chat = raw.parse()
    content = chat.choices[0].message.content
    check("chat answers", bool(content), repr(content))
    check("chat finish_reason", chat.choices[0].finish_reason == "stop", chat.choices[0].finish_reason)

    pieces = []
    finish = None
    chunks = 0
    with client.chat.completions.create(model=a.chat_model, messages=messages, stream=True) as stream:
        for chunk in stream:
            chunks += 1
            if chunk.choices:
                delta = chunk.choices[0].delta
                if delta.content:
                    pieces.append(delta.content)
                finish = chunk.choices[0].finish_reason or finish
    streamed = "".join(pieces)
    check("stream arrives in several chunks", chunks >= 3, str(chunks))
    check("stream deltas equal the answer", streamed == content, f"{streamed!r} != {content!r}")
    check("stream finishes", finish == "stop", str(finish))

    one = client.embeddings.create(model=a.embedding_model, input="hello")
    check("embedding of a string", len(one.data) == 1 and len(one.data[0].embedding) > 0)
    many = client.embeddings.create(model=a.embedding_model, input=["a", "b", "a"])
    check("embeddings of a list", len(many.data) == 3)
    check(
        "embeddings are deterministic",
        many.data[0].embedding == many.data[2].embedding,
    )

    try:
        client.chat.completions.create(model="no-such-model-xyz", messages=messages)
        check("unknown model is refused", False, "no error")
    except openai.NotFoundError as e:
        check("unknown model is refused", "no-such-model-xyz" in str(e), str(e))

    bad = openai.OpenAI(base_url=a.base_url, api_key="caio_wrong_key", max_retries=0)
    try:
        bad.models.list()
        check("a wrong key is refused", False, "no error")
    except openai.AuthenticationError:
        check("a wrong key is refused", True)

    print(f"{'OK' if not failures else 'FAILED'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
