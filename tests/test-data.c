/* test-data.c - byte tokenizer, token shards, SFT JSONL, text, split,
 * seeded resumable loader, and a clear error for each kind of bad data. */
#include "tests/tap.h"
#include "trainer/data.h"
#include "trainer/tokenizer.h"

#include <stdint.h>
#include <unistd.h>

static char dir[256];

static const char *path_in(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    fputs(s, f);
    fclose(f);
}

static ap_data_opts opts(const char *path, int T, int vocab) {
    ap_data_opts o = {.path = path, .format = AP_DATA_AUTO, .seq_len = T, .vocab_size = vocab, .pad_id = 0};
    return o;
}

static void test_tokenizer(void) {
    int32_t t[16];
    size_t n = ap_byte_encode("hé", 3, 1, 1, t);
    ok(n == 5 && t[0] == AP_BYTE_BOS && t[1] == 'h' && t[2] == 0xC3 && t[4] == AP_BYTE_EOS, "encode: BOS bytes EOS");
    char s[16];
    ok(ap_byte_decode(t, n, s) == 3 && !strcmp(s, "hé"), "decode drops specials, restores UTF-8 bytes");
    int32_t badt[] = {65, 300};
    ok(ap_byte_decode(badt, 2, s) < 0, "decode rejects ids >= 259");
    char err[256];
    int32_t *v;
    ok(ap_parse_token_list(" 1, 2 ,300", &v, &n, err, sizeof err) == 0 && n == 3 && v[2] == 300, "token list parsed");
    free(v);
    ok(ap_parse_token_list("1,x", &v, &n, err, sizeof err) < 0 && strstr(err, "character 3"),
       "bad token list names the position: %s", err);
}

static void test_shards(void) {
    char err[512];
    int32_t tok[23];
    for (int i = 0; i < 23; i++) tok[i] = (i * 37) % 300;
    for (int w = 2; w <= 4; w += 2) {
        const char *p = path_in("s.bin");
        ok(ap_shard_write(p, tok, 23, w, 300, err, sizeof err) == 0, "write shard width %d", w);
        ap_dataset *d;
        ap_data_opts o = opts(p, 5, 300);
        ok(ap_dataset_open(&d, &o, err, sizeof err) == 0, "open shard width %d: %s", w, err);
        if (!d) continue;
        /* 22 (input, next) pairs in windows of 5: 4 full + 1 of 2 */
        ok(ap_dataset_len(d) == 5, "samples: ceil((23-1)/5) = 5, got %zu", ap_dataset_len(d));
        int32_t x[5], y[5];
        ap_dataset_get(d, 1, x, y, NULL);
        ok(x[0] == tok[5] && y[0] == tok[6] && x[4] == tok[9] && y[4] == tok[10], "window 1: labels shifted by one");
        ap_dataset_get(d, 4, x, y, NULL);
        ok(x[0] == tok[20] && y[1] == tok[22] && y[2] == AP_IGNORE_INDEX && x[3] == 0 && y[4] == AP_IGNORE_INDEX,
           "last window padded, pad labels -100");
        ap_dataset_free(d);
    }
    ok(ap_shard_write(path_in("x.bin"), tok, 23, 2, 100, err, sizeof err) < 0 && strstr(err, "index 3"),
       "writer refuses a token over vocab: %s", err);

    /* truncated: chop the last byte */
    const char *p = path_in("t.bin");
    ap_shard_write(p, tok, 23, 2, 300, err, sizeof err);
    ok(truncate(p, 32 + 2 * 23 - 1) == 0, "truncate the shard");
    ap_dataset *d;
    ap_data_opts o = opts(p, 5, 300);
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, p) && strstr(err, "truncated"),
       "truncated shard: %s", err);
    ok(truncate(p, 20) == 0 && ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, "header"),
       "shard shorter than its header: %s", err);

    /* wrong magic */
    p = path_in("m.bin");
    ap_shard_write(p, tok, 23, 2, 300, err, sizeof err);
    FILE *f = fopen(p, "r+b");
    fputc('X', f);
    fclose(f);
    o = opts(p, 5, 300);
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, p) && strstr(err, "magic"), "wrong magic: %s",
       err);

    /* token id >= the model's vocab (header vocab unknown = 0) */
    p = path_in("v.bin");
    ap_shard_write(p, tok, 23, 2, 0, err, sizeof err);
    o = opts(p, 5, 290);
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, "index 8") && strstr(err, "296") &&
           strstr(err, "byte offset 48"),
       "token >= vocab names index and offset: %s", err);
    /* header made for a larger vocabulary */
    p = path_in("h.bin");
    ap_shard_write(p, tok, 23, 2, 300, err, sizeof err);
    o = opts(p, 5, 299);
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, "vocab_size 300"), "shard vocab too big: %s", err);
}

static void test_sft(void) {
    char err[512];
    const char *p = path_in("a.jsonl");
    write_text(p, "{\"input_ids\": [1, 2, 3, 4], \"labels\": [-100, -100, 4, 5]}\n"
                  "\n"
                  "{\"input_ids\": [6, 7, 8, 9, 10, 11, 12], \"labels\": [7, 8, 9, 10, 11, 12, 5]}\n"
                  "{\"input_ids\": [13, 14]}\n");
    ap_dataset *d;
    ap_data_opts o = opts(p, 5, 20);
    o.pad_id = 19;
    ok(ap_dataset_open(&d, &o, err, sizeof err) == 0, "open SFT JSONL: %s", err);
    if (d) {
        ok(ap_dataset_len(d) == 3, "padded: one sample per example");
        int32_t x[5], y[5];
        ap_dataset_get(d, 0, x, y, NULL);
        ok(x[0] == 1 && x[3] == 4 && x[4] == 19 && y[0] == -100 && y[2] == 4 && y[3] == 5 && y[4] == -100,
           "padded example: pad id in, -100 out");
        ap_dataset_get(d, 1, x, y, NULL);
        ok(x[4] == 10 && y[4] == 11, "long example truncated to seq_len");
        ap_dataset_get(d, 2, x, y, NULL);
        ok(x[1] == 14 && y[0] == 14 && y[1] == -100, "no labels: next tokens of the example");
        int32_t pos[5];
        ap_dataset_get(d, 2, x, y, pos);
        ok(!ap_dataset_has_positions(d) && pos[0] == 0 && pos[4] == 4, "padded: no position ids of its own (0..T-1)");
        ap_dataset_free(d);
    }
    o.packed = 1;
    ok(ap_dataset_open(&d, &o, err, sizeof err) == 0 && ap_dataset_len(d) == 3, "packed: 13 pairs -> 3 samples");
    if (d) {
        int32_t x[5], y[5];
        ap_dataset_get(d, 0, x, y, NULL);
        ok(x[3] == 4 && x[4] == 6 && y[4] == 7, "packed: next example continues the sample");
        ap_dataset_get(d, 2, x, y, NULL);
        ok(x[0] == 12 && x[1] == 13 && x[2] == 14 && x[3] == 19 && y[3] == -100, "packed: tail padded");
        /* rows: 1 2 3 4 | 6 / 7 8 9 10 11 / 12 | 13 14 pad pad */
        int32_t p0[5], p1[5], p2[5];
        static const int32_t e0[5] = {0, 1, 2, 3, 0}, e1[5] = {0, 1, 2, 3, 4}, e2[5] = {0, 0, 1, 2, 3};
        ap_dataset_get(d, 0, x, y, p0);
        ap_dataset_get(d, 1, x, y, p1);
        ap_dataset_get(d, 2, x, y, p2);
        ok(ap_dataset_has_positions(d) && !memcmp(p0, e0, sizeof p0) && !memcmp(p1, e1, sizeof p1) &&
               !memcmp(p2, e2, sizeof p2),
           "packed: position ids restart at each example and at each row (the cut example goes on from 0)");
        ap_dataset_free(d);
    }
    o.packed = 0;

    write_text(p, "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2\n");
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, ":2:") && strstr(err, "JSON"),
       "malformed JSON names file:line: %s", err);
    write_text(p, "{\"input_ids\": [1, 25]}\n");
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, ":1:") && strstr(err, "input_ids[1]"),
       "JSONL token >= vocab: %s", err);
    write_text(p, "{\"input_ids\": [1, 2], \"labels\": [2]}\n");
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, "labels"), "label length mismatch: %s", err);
    write_text(p, "{\"input_ids\": [1, 2], \"labels\": [2, -5]}\n");
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, "labels[1]"), "bad label value: %s", err);
    write_text(p, "{\"text\": \"hi\"}\n");
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, "input_ids"), "missing input_ids: %s", err);
    write_text(p, "[1,2]\n");
    ok(ap_dataset_open(&d, &o, err, sizeof err) < 0 && strstr(err, ":1:"), "not an object: %s", err);
}

static void test_text_split_loader(void) {
    char err[512];
    const char *p = path_in("t.txt");
    write_text(p, "hello world, hello data loader");
    ap_dataset *d;
    ap_data_opts o = opts(p, 4, AP_BYTE_VOCAB);
    ok(ap_dataset_open(&d, &o, err, sizeof err) == 0, "open text: %s", err);
    if (!d) return;
    int32_t x[4], y[4];
    ap_dataset_get(d, 0, x, y, NULL);
    ok(x[0] == AP_BYTE_BOS && x[1] == 'h' && y[0] == 'h' && y[3] == 'l', "text: BOS then bytes");
    ok(ap_dataset_len(d) == 8, "32 tokens -> 8 windows of 4 (got %zu)", ap_dataset_len(d));
    o.vocab_size = 1000;
    ap_dataset *d2;
    ok(ap_dataset_open(&d2, &o, err, sizeof err) < 0 && strstr(err, "259"), "text with another vocab: %s", err);

    ap_dataset *tr, *va;
    ok(ap_dataset_split(d, 0.25, &tr, &va, err, sizeof err) == 0 && ap_dataset_len(tr) == 6 && va &&
           ap_dataset_len(va) == 2,
       "split 25%%: 6 train + 2 val");
    int32_t vx[4], vy[4];
    ap_dataset_get(va, 0, vx, vy, NULL);
    ap_dataset_get(d, 6, x, y, NULL);
    ok(!memcmp(vx, x, sizeof x), "val is the tail of the data");
    ap_dataset_free(d); /* slices keep the storage alive */

    /* loader: each epoch a permutation; same seed same order; resumable */
    ap_loader a, b;
    ap_loader_init(&a, tr, 1, 42, err, sizeof err);
    int seen[6] = {0};
    int32_t bx[6 * 4], by[6 * 4];
    ap_loader_next(&a, 6, bx, by, NULL, err, sizeof err);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            ap_dataset_get(tr, (size_t)j, x, y, NULL);
            if (!memcmp(x, bx + 4 * i, sizeof x)) seen[j]++;
        }
    int perm = 1, moved = 0;
    for (int j = 0; j < 6; j++) perm &= seen[j] == 1;
    for (int i = 0; i < 6; i++) {
        ap_dataset_get(tr, (size_t)i, x, y, NULL);
        moved |= memcmp(x, bx + 4 * i, sizeof x) != 0;
    }
    ok(perm && moved, "one epoch visits every sample once, shuffled");
    ap_loader_next(&a, 3, bx, by, NULL, err, sizeof err); /* into epoch 1 */
    ap_loader_state saved = a.st;
    ok(saved.epoch == 1 && saved.index == 3, "state: epoch 1, index 3");
    int32_t n1[10 * 4], n2[10 * 4], l1[40], l2[40];
    ap_loader_next(&a, 10, n1, l1, NULL, err, sizeof err);
    ap_loader_init(&b, tr, 1, 42, err, sizeof err);
    ok(ap_loader_set_state(&b, &saved, err, sizeof err) == 0, "restore state");
    ap_loader_next(&b, 10, n2, l2, NULL, err, sizeof err);
    ok(!memcmp(n1, n2, sizeof n1) && !memcmp(l1, l2, sizeof l1), "restored loader continues the same order");
    ap_loader_free(&b);
    ap_loader_init(&b, tr, 1, 43, err, sizeof err);
    ap_loader_next(&b, 10, n2, l2, NULL, err, sizeof err);
    ok(memcmp(n1, n2, sizeof n1) != 0, "another seed, another order");
    ap_loader_state badst = {42, 0, 99};
    ok(ap_loader_set_state(&b, &badst, err, sizeof err) < 0, "state past the data rejected");
    ap_loader_free(&a);
    ap_loader_free(&b);
    ap_loader_init(&a, tr, 0, 1, err, sizeof err);
    ap_loader_next(&a, 2, bx, by, NULL, err, sizeof err);
    ap_dataset_get(tr, 1, x, y, NULL);
    ok(!memcmp(x, bx + 4, sizeof x), "shuffle off: file order");
    ap_loader_free(&a);
    ap_dataset_free(tr);
    ap_dataset_free(va);
}

static void test_builtin(void) {
    size_t n1, n2;
    char *a = ap_builtin_text(&n1), *b = ap_builtin_text(&n2);
    ok(a && b && n1 == n2 && !memcmp(a, b, n1), "built-in text is deterministic");
    ok(n1 > 150000 && n1 <= 200 * 1024, "built-in text is ~200 KB (%zu bytes)", n1);
    ok(strlen(a) == n1 && strstr(a, "Once upon a time"), "built-in text is text");
    free(a);
    free(b);
    char err[256];
    ap_dataset *d;
    ap_data_opts o = opts(NULL, 128, AP_BYTE_VOCAB);
    ok(ap_dataset_open(&d, &o, err, sizeof err) == 0 && ap_dataset_len(d) > 1000, "built-in dataset opens");
    ap_dataset_free(d);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ap-test-data-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_tokenizer();
    test_shards();
    test_sft();
    test_text_split_loader();
    test_builtin();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) diag("could not remove %s", dir);
    return tap_done();
}
