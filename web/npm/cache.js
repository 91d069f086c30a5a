// Model files kept in the browser's Cache API, so that a page reload reads the weights from disk
// instead of the network. An entry is written in one `Cache.put` of a complete in-memory body,
// which the browser commits whole or not at all: an interrupted download or a full disk never
// leaves a truncated file behind to be loaded later. Works on the main thread and in workers
// (both see the same origin's storage).

const CACHE_NAME = "rwkv-wgpu-models-v1";
// The body's length, written when it is stored, checked when it is read back.
const BYTES = "x-rwkv-bytes";
const KIND = "x-rwkv-kind";
const TOKENIZER = "x-rwkv-tokenizer";
const STORED = "x-rwkv-stored";

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Whether this context has the Cache API (pages over plain http on another host do not). */
export const cacheAvailable = () => typeof caches !== "undefined";

async function openCache() {
  return cacheAvailable() ? caches.open(CACHE_NAME) : null;
}

const absolute = (url) => new URL(url, globalThis.document?.baseURI ?? globalThis.location?.href).href;

function describeEntry(request, response) {
  return {
    url: request.url,
    bytes: Number(response.headers.get(BYTES)),
    kind: response.headers.get(KIND) ?? "model",
    tokenizerUrl: response.headers.get(TOKENIZER) || undefined,
    storedAt: response.headers.get(STORED) || undefined,
  };
}

/** Every cached file: `{ url, bytes, kind: "model" | "tokenizer", tokenizerUrl, storedAt }`. */
export async function listCachedFiles() {
  const cache = await openCache();
  if (!cache) return [];
  const files = [];
  for (const request of await cache.keys()) {
    const response = await cache.match(request);
    if (response) files.push(describeEntry(request, response));
  }
  return files;
}

/** The cached models (not their tokenizers), each with the tokenizer URL it was loaded with. */
export async function listCachedModels() {
  return (await listCachedFiles()).filter((file) => file.kind === "model");
}

/** Deletes a cached model and its tokenizer.json unless another cached model uses it too. */
export async function deleteCachedModel(url) {
  const cache = await openCache();
  if (!cache) return false;
  url = absolute(url);
  const files = await listCachedFiles();
  const model = files.find((file) => file.url === url);
  if (!model) return false;
  await cache.delete(url);
  const tokenizer = model.tokenizerUrl;
  if (tokenizer && !files.some((file) => file.url !== url && file.tokenizerUrl === tokenizer)) {
    await cache.delete(tokenizer);
  }
  return true;
}

/** Deletes every cached file. */
export async function clearModelCache() {
  return cacheAvailable() ? caches.delete(CACHE_NAME) : false;
}

/** `{ usage, quota }` in bytes for this origin, as the browser estimates them (or undefined). */
export async function storageEstimate() {
  return globalThis.navigator?.storage?.estimate?.();
}

/**
 * Reads a stream whole, reporting `onProgress(done, total)`; `total` is 0 when unknown. A known
 * size is allocated once, so a large model is not held twice while it arrives.
 */
export async function readStream(stream, total, onProgress) {
  let buffer = new Uint8Array(total || 1 << 20);
  let length = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (length + value.length > buffer.length) {
      // Compressed transfers announce fewer bytes than they deliver.
      const grown = new Uint8Array(Math.max(buffer.length * 2, length + value.length));
      grown.set(buffer.subarray(0, length));
      buffer = grown;
    }
    buffer.set(value, length);
    length += value.length;
    onProgress?.(length, total && Math.max(total, length));
  }
  return length === buffer.length ? buffer : buffer.slice(0, length);
}

function isQuotaError(error) {
  return error?.name === "QuotaExceededError" || /quota/i.test(String(error?.message ?? ""));
}

/**
 * Stores a complete body; returns a message saying why it was not stored (the caller goes on
 * without the cache), or undefined.
 */
async function store(cache, url, bytes, meta) {
  const headers = {
    [BYTES]: String(bytes.length),
    [KIND]: meta.kind ?? "model",
    [STORED]: new Date().toISOString(),
    "content-type": "application/octet-stream",
  };
  if (meta.tokenizerUrl) headers[TOKENIZER] = meta.tokenizerUrl;
  const tooBig = (detail) =>
    `not enough storage to cache ${url} (${mib(bytes.length)}): ${detail}; it is loaded, but the next ` +
    "visit downloads it again (delete cached models to make room)";
  try {
    const estimate = await storageEstimate();
    if (estimate?.quota !== undefined && estimate.quota - estimate.usage < bytes.length) {
      return tooBig(`the browser allows this site ${mib(Math.max(0, estimate.quota - estimate.usage))} more`);
    }
    await cache.put(url, new Response(bytes, { headers }));
    return undefined;
  } catch (error) {
    // A failed put commits nothing, but make sure no entry survives it under this URL.
    await cache.delete(url).catch(() => {});
    const message = String(error?.message ?? error);
    return isQuotaError(error) ? tooBig(message) : `could not cache ${url}: ${message}`;
  }
}

/**
 * The bytes at `url`, from the cache when it holds them (no network request), else downloaded
 * and cached. Resolves to `{ bytes, source: "cache" | "network", warning }`, `warning` saying why
 * a download was not cached. `onProgress(stage, done, total)` with stage "cache" or "download".
 * Options: `cache: false` neither reads nor writes the cache; `kind` and `tokenizerUrl` are kept
 * with the entry for `listCachedModels`.
 */
export async function fetchCached(url, { onProgress, cache: useCache = true, kind = "model", tokenizerUrl } = {}) {
  url = absolute(url);
  const cache = useCache ? await openCache() : null;
  const hit = cache ? await cache.match(url) : undefined;
  if (hit) {
    const size = Number(hit.headers.get(BYTES));
    const bytes = await readStream(hit.body, size, (done, total) => onProgress?.("cache", done, total));
    if (bytes.length === size) return { bytes, source: "cache" };
    await cache.delete(url); // damaged (storage cleared under us): download it again
  }
  // The Cache API keeps the copy; the HTTP cache would hold a second one of a large file.
  const response = await fetch(url, cache ? { cache: "no-store" } : {});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`.trim());
  const encoded = response.headers.get("content-encoding");
  const total = encoded && encoded !== "identity" ? 0 : Number(response.headers.get("content-length")) || 0;
  const bytes = await readStream(response.body, total, (done, all) => onProgress?.("download", done, all));
  const warning = cache ? await store(cache, url, bytes, { kind, tokenizerUrl }) : undefined;
  return { bytes, source: "network", warning };
}
