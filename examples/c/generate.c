/* Greedy generation through rwkv-wgpu's C ABI:
 *   generate MODEL TOKENIZER PROMPT TOKENS
 * prints the continuation of PROMPT (TOKENIZER may be "-" for the model's own). Build:
 *   cargo build --release -p rwkv-wgpu-c
 *   cc -I bindings/c/include examples/c/generate.c -L target/release -lrwkv_wgpu_c \
 *      -Wl,-rpath,target/release -o generate
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rwkv_wgpu.h"

static int32_t print_piece(void *user_data, uint32_t token, const char *text, size_t length) {
    (void)user_data;
    (void)token;
    fwrite(text, 1, length, stdout);
    fflush(stdout);
    return 0; /* go on */
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER PROMPT TOKENS\n", argv[0]);
        return 2;
    }
    RwkvOptions options;
    rwkv_options_default(&options);
    if (strcmp(argv[2], "-") != 0) options.tokenizer = argv[2];
    options.slots = 1;
    RwkvModel *model = rwkv_model_load(argv[1], &options);
    if (!model) {
        fprintf(stderr, "error: %s\n", rwkv_last_error());
        return 1;
    }
    RwkvSession *session = rwkv_session_new(model);
    RwkvGenerateOptions generate;
    rwkv_generate_options_default(&generate);
    generate.max_tokens = (uint32_t)atoi(argv[4]);
    int32_t status = session ? rwkv_session_generate(session, argv[3], &generate, print_piece, NULL, NULL) : RWKV_ERROR;
    if (status != RWKV_OK) fprintf(stderr, "error: %s\n", rwkv_last_error());
    printf("\n");
    rwkv_session_free(session);
    rwkv_model_free(model);
    return status == RWKV_OK ? 0 : 1;
}
