#!/usr/bin/env python3
"""Load benchmark of a running `rwkv-wgpu serve`: for each number of concurrent clients, every
client sends requests one after another (streamed chat completions with distinct prompts, so the
prefix cache does not help), and the script reports the generated tokens per second of all
clients together and the percentiles of time to first token and of whole-request latency.

    cargo run --release -- serve --max-batch 64 &
    .ci/venv/bin/python tools/bench_serve.py --clients 1 8 32 --requests 4 --max-tokens 64

Needs the `openai` package (`bash .ci/run` puts it in .ci/venv).
"""

import argparse
import asyncio
import json
import statistics
import time

import openai


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def one_request(client, model, prompt, max_tokens):
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return first if first is not None else time.perf_counter() - start, time.perf_counter() - start, tokens


async def level(client, model, clients, requests, max_tokens, tag):
    async def worker(c):
        out = []
        for r in range(requests):
            # A prompt of its own per request: no cached prefix beyond the chat template.
            prompt = f"Speak, {tag} client {c} request {r}: what news from Verona?"
            out.append(await one_request(client, model, prompt, max_tokens))
        return out

    start = time.perf_counter()
    results = [x for batch in await asyncio.gather(*(worker(c) for c in range(clients))) for x in batch]
    elapsed = time.perf_counter() - start
    ttft = [r[0] for r in results]
    latency = [r[1] for r in results]
    tokens = sum(r[2] for r in results)
    return {
        "clients": clients, "requests": len(results), "completion_tokens": tokens,
        "seconds": round(elapsed, 2), "tokens_per_second": round(tokens / elapsed, 1),
        "ttft_p50_ms": round(1000 * statistics.median(ttft), 1), "ttft_p99_ms": round(1000 * percentile(ttft, 0.99), 1),
        "latency_p50_ms": round(1000 * statistics.median(latency), 1),
        "latency_p90_ms": round(1000 * percentile(latency, 0.9), 1),
        "latency_p99_ms": round(1000 * percentile(latency, 0.99), 1),
    }


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600)
    model = (await client.models.list()).data[0].id
    # One request first, so that no level pays for compiling the kernels.
    await one_request(client, model, "warm-up", 8)
    for clients in args.clients:
        print(json.dumps(await level(client, model, clients, args.requests, args.max_tokens, f"run {time.time()}")),
              flush=True)


if __name__ == "__main__":
    asyncio.run(main())
