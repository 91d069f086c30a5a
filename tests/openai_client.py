"""The official `openai` Python client against a running `rwkv-wgpu` server (started by
tests/openai_client.rs, which passes its base URL and API key): completions and chat, streamed
and not, stop strings, seeds that reproduce, and errors as the client's exceptions."""

import json
import sys

import openai


def main(base_url: str, api_key: str, model: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

    assert [m.id for m in client.models.list().data] == [model]

    # Completions, whole and streamed, give the same greedy text.
    whole = client.completions.create(model=model, prompt="ROMEO:", max_tokens=24, temperature=0)
    text = whole.choices[0].text
    assert len(text) > 0 and whole.choices[0].finish_reason == "length", whole
    assert whole.usage.completion_tokens == 24 and whole.usage.prompt_tokens == 6, whole.usage
    pieces = client.completions.create(model=model, prompt="ROMEO:", max_tokens=24, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in pieces if chunk.choices) == text

    # A stop string ends the text before it.
    stop = text[len(text) // 2:][:2]
    stopped = client.completions.create(model=model, prompt="ROMEO:", max_tokens=24, temperature=0, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop", stopped
    assert stopped.choices[0].text == text[:text.index(stop)], (stopped.choices[0].text, text, stop)

    # Chat, whole and streamed, with the usage at the end of the stream.
    messages = [{"role": "system", "content": "Speak as in a play."}, {"role": "user", "content": "Who goes there?"}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=32, temperature=0)
    reply = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant" and chat.object == "chat.completion", chat
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=32, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens, chunks[-1]
    # The same conversation again starts from the cached state of its prompt.
    again = client.chat.completions.create(model=model, messages=messages, max_tokens=32, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1, again.usage
    assert again.choices[0].message.content == reply

    # Log-probabilities of the chosen tokens and the most likely ones.
    scored = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                            logprobs=True, top_logprobs=2)
    first = scored.choices[0].logprobs.content[0]
    assert first.logprob <= 0 and len(first.top_logprobs) == 2, first
    assert first.token == first.top_logprobs[0].token, first

    # Structured output: JSON that validates against the schema, parsed by the client.
    schema = {"type": "object", "properties": {"speaker": {"type": "string", "maxLength": 12},
                                               "lines": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["speaker", "lines"], "additionalProperties": False}
    for seed in (1, 2):
        structured = client.chat.completions.create(
            model=model, messages=messages, max_tokens=200, temperature=1.0, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "cue", "schema": schema, "strict": True}})
        cue = json.loads(structured.choices[0].message.content)
        assert set(cue) == {"speaker", "lines"} and isinstance(cue["speaker"], str), cue
        assert len(cue["speaker"]) <= 12 and 1 <= cue["lines"] <= 9, cue
        assert structured.choices[0].finish_reason == "stop", structured
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4,
                                       response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
        raise AssertionError("a bad schema was accepted")
    except openai.BadRequestError as error:
        assert "JSON schema" in str(error), error

    # A seed reproduces sampled text.
    sampled = [client.completions.create(model=model, prompt="JULIET:", max_tokens=24, temperature=1.0,
                                         top_p=0.95, seed=11).choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1], sampled

    # Errors are the client's exceptions, with the server's messages.
    try:
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as error:
        assert "API key" in str(error), error
    try:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=4)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as error:
        assert "gpt-4" in str(error), error
    try:
        client.completions.create(model=model, prompt="x", max_tokens=4, temperature=7)
        raise AssertionError("temperature 7 was accepted")
    except openai.BadRequestError as error:
        assert "temperature" in str(error), error
    print("openai client: all checks passed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
