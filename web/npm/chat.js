// OpenAI's chat completions in terms of the wasm Model's `generate`: the RWKV World chat prompt,
// the request's sampling as generate options, and the response objects. The same template as
// the native server's (src/server/template.rs), so a conversation reads the same tokens on both.

const ROLES = { system: "System", developer: "System", user: "User", assistant: "Assistant" };

/** Where a reply ends: RWKV's chat data separates turns with a blank line. */
export const TURN_END = "\n\n";
/** The start of the model's reply, which it continues. */
export const REPLY_START = "Assistant:";

const fail = (message) => {
  throw new Error(`chat.completions.create: ${message}`);
};

/** A message's text: a string, or OpenAI's array of `{ type: "text", text }` parts. */
function messageText(content, index) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (part?.type === "text" && typeof part.text === "string" ? part.text
        : fail(`messages[${index}]: only text parts are supported, got ${JSON.stringify(part?.type)}`)))
      .join("");
  }
  return fail(`messages[${index}].content must be a string or an array of text parts`);
}

// A message's own blank lines would read as the end of its turn, so they become single breaks.
// A reply is not trimmed: sent back as it came, it must be the text the model wrote, so that the
// conversation's state can be continued (a reply cut at max_tokens may end in a space).
function clean(text, trim) {
  let cleaned = text.replace(/\r\n/g, "\n");
  if (trim) cleaned = cleaned.trim();
  while (cleaned.includes("\n\n")) cleaned = cleaned.replaceAll("\n\n", "\n");
  return cleaned;
}

/**
 * The prompt for `messages`: `System: …`, `User: …` and `Assistant: …` turns separated by blank
 * lines, ending with "Assistant:" for the model to continue.
 */
export function chatPrompt(messages) {
  if (!Array.isArray(messages) || messages.length === 0) fail("messages must be a non-empty array");
  const turns = messages.map((message, index) => {
    const role = ROLES[message?.role];
    if (!role) fail(`messages[${index}]: unknown role ${JSON.stringify(message?.role)}: use system, user or assistant`);
    return `${role}: ${clean(messageText(message.content, index), role !== "Assistant")}${TURN_END}`;
  });
  return turns.join("") + REPLY_START;
}

function number(request, name, low, high) {
  const value = request[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !(value >= low && value <= high)) fail(`${name} must be a number from ${low} to ${high}, got ${JSON.stringify(value)}`);
  return value;
}

/** The grammar `response_format` asks for, as generate options. */
function responseFormat(format) {
  if (format === undefined || format === null || format.type === "text") return {};
  if (format.type === "json_object") return { jsonSchema: { type: "object" } };
  if (format.type === "json_schema") {
    const schema = format.json_schema?.schema;
    if (schema === undefined) fail("a response_format of type json_schema needs json_schema.schema");
    return { jsonSchema: schema };
  }
  return fail(`response_format.type must be text, json_object or json_schema, got ${JSON.stringify(format.type)}`);
}

/**
 * A request checked and turned into `{ prompt, options, stream, model }`, `options` being the
 * Model's generate options. Sampling follows OpenAI's defaults (temperature 1, top-p 1) and
 * temperature 0 means the most likely token, as on the native server.
 */
export function chatRequest(request) {
  if (typeof request !== "object" || request === null) fail("give a request object");
  if (request.n !== undefined && request.n !== 1) fail("one choice per request (n = 1)");
  if (request.logprobs) fail("logprobs are not supported here: use engine.generate with { logprobs }");
  const prompt = chatPrompt(request.messages);
  const temperature = number(request, "temperature", 0, 2) ?? 1;
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens >= 1)) fail(`max_tokens must be a whole number of at least 1, got ${maxTokens}`);
  const stop = request.stop === undefined || request.stop === null ? [] : [request.stop].flat();
  if (stop.some((text) => typeof text !== "string" || text === "")) fail("stop must be a string or an array of non-empty strings");
  const grammar = responseFormat(request.response_format);
  const options = {
    ...(temperature === 0 ? { greedy: true } : { temperature }),
    topP: number(request, "top_p", 0, 1) ?? 1,
    // A grammar ends the reply itself, and JSON may hold blank lines.
    stop: grammar.jsonSchema ? stop : [TURN_END, ...stop],
    ...grammar,
  };
  if (maxTokens !== undefined) options.maxTokens = maxTokens;
  const penalties = { presence_penalty: "presencePenalty", frequency_penalty: "frequencyPenalty" };
  for (const [name, option] of Object.entries(penalties)) {
    const value = number(request, name, -2, 2);
    if (value !== undefined) options[option] = value;
  }
  // Not OpenAI's, but the native server's too.
  if (request.top_k !== undefined && request.top_k !== null) options.topK = request.top_k;
  if (request.seed !== undefined && request.seed !== null) options.seed = request.seed;
  if (request.logit_bias) options.logitBias = request.logit_bias;
  return { prompt, options, stream: request.stream === true, model: request.model };
}

export const finishReason = (finish) => (finish === "maxTokens" ? "length" : "stop");

/** The reply as the message's content: without the space the model writes after "Assistant:". */
export const replyContent = (text) => text.replace(/^ /, "");

export function newCompletionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `chatcmpl-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

function usage(result) {
  return {
    prompt_tokens: result.promptTokens,
    completion_tokens: result.tokens,
    total_tokens: result.promptTokens + result.tokens,
  };
}

// Not part of OpenAI's objects: what the page shows as the reply's speed.
function timings(result) {
  return {
    prompt_seconds: result.promptSeconds,
    seconds: result.seconds,
    tokens_per_second: result.tokensPerSecond,
    finish: result.finish,
  };
}

/** A "chat.completion" object for a finished generation. */
export function completionObject(meta, result) {
  return {
    id: meta.id,
    object: "chat.completion",
    created: meta.created,
    model: meta.model,
    choices: [{
      index: 0,
      message: { role: "assistant", content: replyContent(result.text) },
      finish_reason: finishReason(result.finish),
    }],
    usage: usage(result),
    timings: timings(result),
  };
}

/** A "chat.completion.chunk": `delta` for a piece of the reply, or the last with `result`. */
export function chunkObject(meta, delta, result) {
  const chunk = {
    id: meta.id,
    object: "chat.completion.chunk",
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, delta, finish_reason: result ? finishReason(result.finish) : null }],
  };
  if (result) {
    chunk.usage = usage(result);
    chunk.timings = timings(result);
  }
  return chunk;
}
