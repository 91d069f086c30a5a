/* What the C ABI does with mistakes and interruptions: every case returns an error status or
 * NULL with a message, never crashes. Run by tests/c_api.rs:
 *   errors MODEL TOKENIZER
 * prints one "ok: ..." line per case and exits 0, or names the first failure and exits 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rwkv_wgpu.h"

static int failures = 0;

static void check(int condition, const char *what) {
    if (condition) {
        printf("ok: %s\n", what);
    } else {
        printf("FAILED: %s (last error: %s)\n", what, rwkv_last_error());
        failures++;
    }
}

static int contains(const char *text, const char *part) { return strstr(text, part) != NULL; }

/* Stops the generation from the callback after three tokens by setting the cancel flag. */
static int32_t cancel_after_three(void *user_data, uint32_t token, const char *text, size_t length) {
    (void)token;
    (void)text;
    (void)length;
    static int seen = 0;
    if (++seen == 3) rwkv_cancel_set((const RwkvCancel *)user_data);
    return 0;
}

static int32_t stop_at_once(void *user_data, uint32_t token, const char *text, size_t length) {
    (void)user_data;
    (void)token;
    (void)text;
    (void)length;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER\n", argv[0]);
        return 2;
    }
    RwkvOptions options;
    rwkv_options_default(&options);
    options.tokenizer = argv[2];

    check(rwkv_model_load("/no/such/model.safetensors", &options) == NULL &&
              contains(rwkv_last_error(), "/no/such/model.safetensors"),
          "a missing file is NULL with a message naming it");
    check(rwkv_model_load(NULL, &options) == NULL && contains(rwkv_last_error(), "path is NULL"), "a NULL path");
    const uint8_t junk[] = "not a model at all";
    check(rwkv_model_load_bytes(junk, sizeof junk, &options) == NULL && contains(rwkv_last_error(), "not a model"),
          "bytes that are no model");
    options.quant = "int3";
    check(rwkv_model_load(argv[1], &options) == NULL && contains(rwkv_last_error(), "int3"), "an unknown --quant");
    options.quant = NULL;

    options.slots = 1;
    RwkvModel *model = rwkv_model_load(argv[1], &options);
    check(model != NULL, "the model loads");
    if (!model) return 1;
    uint32_t vocab = rwkv_model_vocab_size(model);
    check(vocab == 256, "the demo vocabulary has 256 tokens");

    RwkvSession *session = rwkv_session_new(model);
    check(session != NULL, "a session");
    check(rwkv_session_new(model) == NULL && contains(rwkv_last_error(), "slot"), "no second session in one slot");

    uint32_t bad[] = {1, 2, vocab + 7};
    float *logits = malloc(sizeof(float) * vocab);
    check(rwkv_session_feed(session, bad, 3, logits) == RWKV_ERROR && contains(rwkv_last_error(), "263"),
          "a token beyond the vocabulary is an error naming it");
    check(rwkv_session_feed(NULL, bad, 1, logits) == RWKV_ERROR, "a NULL session");

    /* Tokenize with too small a buffer, then with enough. */
    uint32_t tokens[64];
    size_t count = 0;
    check(rwkv_tokenize(model, "ROMEO:", tokens, 2, &count) == RWKV_BUFFER_TOO_SMALL && count == 6,
          "tokenize reports the room it needs");
    check(rwkv_tokenize(model, "ROMEO:", tokens, 64, &count) == RWKV_OK && count == 6, "tokenize");
    char text[8];
    size_t length = 0;
    check(rwkv_detokenize(model, tokens, count, text, 3, &length) == RWKV_BUFFER_TOO_SMALL && length == 6,
          "detokenize reports the room it needs");
    check(rwkv_detokenize(model, tokens, count, text, sizeof text, &length) == RWKV_OK && strcmp(text, "ROMEO:") == 0,
          "detokenize round-trips");

    /* A state saved after a prompt, restored after other tokens, gives the same logits. */
    check(rwkv_session_reset(session) == RWKV_OK, "reset");
    check(rwkv_session_feed(session, tokens, count, logits) == RWKV_OK, "feed");
    size_t state_length = 0;
    check(rwkv_session_save_state(session, NULL, 0, &state_length) == RWKV_BUFFER_TOO_SMALL && state_length > 0,
          "save_state reports its size");
    uint8_t *state = malloc(state_length);
    check(rwkv_session_save_state(session, state, state_length, &state_length) == RWKV_OK, "save_state");
    uint32_t next[] = {32};
    float *expected = malloc(sizeof(float) * vocab);
    float *again = malloc(sizeof(float) * vocab);
    check(rwkv_session_feed(session, next, 1, expected) == RWKV_OK, "feed after saving");
    check(rwkv_session_feed(session, tokens, count, NULL) == RWKV_OK, "feed without logits");
    check(rwkv_session_load_state(session, state, state_length) == RWKV_OK, "load_state");
    check(rwkv_session_feed(session, next, 1, again) == RWKV_OK && memcmp(expected, again, sizeof(float) * vocab) == 0,
          "the restored state gives the same logits");
    check(rwkv_session_load_state(session, state, state_length / 2) == RWKV_ERROR, "a truncated state is an error");

    /* Cancelled generations: by the flag (set from the callback here; any thread may), and by the callback. */
    RwkvGenerateOptions generate;
    rwkv_generate_options_default(&generate);
    generate.max_tokens = 50;
    RwkvCancel *cancel = rwkv_cancel_new();
    check(rwkv_session_generate(session, "ROMEO:", &generate, cancel_after_three, cancel, cancel) == RWKV_CANCELLED,
          "a generation stops when its cancel flag is set");
    rwkv_cancel_free(cancel);
    check(rwkv_session_generate(session, "ROMEO:", &generate, stop_at_once, NULL, NULL) == RWKV_CANCELLED,
          "a callback stops the generation");
    generate.greedy = false;
    generate.temperature = -1.0f;
    check(rwkv_session_generate(session, "ROMEO:", &generate, NULL, NULL, NULL) == RWKV_ERROR &&
              contains(rwkv_last_error(), "temperature"),
          "a negative temperature is an error");

    free(logits);
    free(expected);
    free(again);
    free(state);
    rwkv_session_free(session);
    rwkv_model_free(model);
    printf(failures ? "%d FAILED\n" : "all ok\n", failures);
    return failures ? 1 : 0;
}
