/* test-ckpt.c - the checkpoint library in one process: state round trip,
 * chunking and fletcher32, big text, load errors naming tensors, keep_last,
 * re-saving a committed step, cleanup of interrupted saves, refusing
 * incomplete or duplicated stage sets (TAP). */
#include "checkpoint/ckpt.h"
#include "checkpoint/ckpt_internal.h"
#include "tests/ckpt-synth.h"
#include "tests/tap.h"

#include <hdf5.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char err[2048];

/* HDF5 1.10's H5_checksum_fletcher32, as written there: the reference. */
static uint32_t fletcher_ref(const void *data_, size_t len_) {
    const uint8_t *data = data_;
    size_t len = len_ / 2;
    uint32_t sum1 = 0, sum2 = 0;
    while (len) {
        size_t tlen = len > 360 ? 360 : len;
        len -= tlen;
        do {
            sum1 += (uint32_t)(((uint16_t)data[0]) << 8) | ((uint16_t)data[1]);
            data += 2;
            sum2 += sum1;
        } while (--tlen);
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    if (len_ % 2) {
        sum1 += (uint32_t)(((uint16_t)*data) << 8);
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    return (sum2 << 16) | sum1;
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static ap_ckpt_state base_state(int64_t step, char *yaml, char *json) {
    static unsigned char rng[300];
    for (int i = 0; i < 300; i++) rng[i] = (unsigned char)(i * 13 + step);
    ap_ckpt_state s = {0};
    s.step = step;
    s.tokens_consumed = 123456789012LL;
    s.samples_consumed = 4242;
    s.lr_step = step + 7;
    s.data_pos[0] = UINT64_MAX;
    s.data_pos[1] = 17;
    s.data_pos[2] = 0;
    s.n_data_pos = 3;
    s.rng_state = rng;
    s.rng_len = sizeof rng;
    s.pp = 1, s.dp = 1, s.tp = 1, s.stages_per_rank = 1;
    snprintf(s.schedule, sizeof s.schedule, "1f1b");
    s.config_yaml = yaml;
    s.model_config_json = json;
    return s;
}

static int save1(const char *dir, int64_t step, synth_stage *st, char *yaml, char *json, int keep) {
    ap_ckpt_state s = base_state(step, yaml, json);
    ap_ckpt_stage sg = {0, 0, st->first_layer, st->last_layer, st->t, st->n};
    ap_ckpt_save_opts o = {keep, NULL, NULL};
    return ap_ckpt_save(dir, &s, &sg, 1, &o, MPI_COMM_SELF, err, sizeof err);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    char tmpl[] = "/tmp/test-ckpt-XXXXXX", dir[512], p[1024];
    ok(mkdtemp(tmpl) != NULL, "temporary directory");
    snprintf(dir, sizeof dir, "%s/ck", tmpl);

    synth_model m = synth_default(2);
    char *json = synth_config_json(&m);
    size_t yl = 100 * 1024; /* beyond the 64 KiB attribute limit */
    char *yaml = malloc(yl + 1);
    for (size_t i = 0; i < yl; i++) yaml[i] = i % 64 == 63 ? '\n' : (char)('a' + i % 26);
    yaml[yl] = 0;
    synth_stage st = synth_stage_tensors(&m, 0, 1);
    /* one big 1-D tensor (2M floats = 8 MiB): chunked below 4 MiB */
    synth_add(&st, "model.big.bias", 1, 2u << 20, 0);
    /* edge chunks (partial, stored full size) and rows wider than a chunk */
    synth_add(&st, "model.edge.bias", 1, 1500000, 0);
    synth_add(&st, "model.edge.weight", 2, 3000, 700);
    synth_add(&st, "model.wide.weight", 2, 2, 1500000);
    synth_fill(&st, 3);

    /* ---- our fletcher32 is HDF5's ---- */
    {
        size_t cap = 5u << 20;
        unsigned char *b = malloc(cap);
        int bad = 0, k;
        srand(7);
        for (k = 0; k < 3000; k++) {
            size_t L = (size_t)rand() % 5000;
            int mode = k % 4;
            for (size_t i = 0; i < L; i++)
                b[i] = (unsigned char)(mode == 0 ? 0 : mode == 1 ? 0xff : mode == 2 ? (rand() % 50 ? 0 : rand()) : rand());
            bad += ap_ckpt_fletcher32(b, L) != fletcher_ref(b, L);
        }
        ok(bad == 0, "fletcher32 equals HDF5's on %d random buffers (zeros, 0xff, sparse, random; odd lengths)", k);
        memset(b, 0xff, cap);
        int big = ap_ckpt_fletcher32(b, 4u << 20) == fletcher_ref(b, 4u << 20);
        for (size_t i = 0; i < cap; i++) b[i] = (unsigned char)(i * 2654435761u >> 13);
        big &= ap_ckpt_fletcher32(b, cap - 1) == fletcher_ref(b, cap - 1);
        ok(big, "fletcher32 equals HDF5's on 4-5 MiB chunks");
        free(b);
    }

    /* ---- round trip ---- */
    ok(save1(dir, 5, &st, yaml, json, 0) == 0, "save step 5: %s", err);
    snprintf(p, sizeof p, "%s/step_00000005/COMMITTED", dir);
    ok(exists(p), "COMMITTED marker written");
    snprintf(p, sizeof p, "%s/latest", dir);
    char link[64] = {0};
    ok(readlink(p, link, sizeof link - 1) > 0 && !strcmp(link, "step_00000005"), "latest -> step_00000005 (%s)", link);
    synth_clear(&st);
    ap_ckpt_state got;
    ok(ap_ckpt_load(dir, json, &got, st.t, st.n, MPI_COMM_SELF, err, sizeof err) == 0, "load: %s", err);
    const char *bad = NULL;
    ok(synth_check(&st, 3, &bad) == 0, "params and moments bit-identical (first bad: %s)", bad ? bad : "-");
    ok(got.step == 5 && got.lr_step == 12 && got.tokens_consumed == 123456789012LL && got.samples_consumed == 4242,
       "step, lr step, tokens, samples restored");
    ok(got.n_data_pos == 3 && got.data_pos[0] == UINT64_MAX && got.data_pos[1] == 17, "data-loader position (u64) restored");
    ok(got.rng_len == 300 && got.rng_state[299] == (unsigned char)(299 * 13 + 5), "RNG bytes restored");
    ok(got.pp == 1 && got.stages_per_rank == 1 && !strcmp(got.schedule, "1f1b"), "topology restored");
    ok(got.config_yaml && !strcmp(got.config_yaml, yaml), "100 KiB config YAML restored");
    ok(got.model_config_json && !strcmp(got.model_config_json, json), "config.json text restored");
    ap_ckpt_state_free(&got);

    /* ---- inside the HDF5 file ---- */
    snprintf(p, sizeof p, "%s/step_00000005/stage_000.h5", dir);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    ok(f >= 0, "stage_000.h5 opens with plain HDF5");
    hid_t d = H5Dopen2(f, "/tensors/model.big.bias/param", H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[4] = {0};
    unsigned flags = 0;
    size_t nelmts = 0;
    unsigned cd[4];
    ok(H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 4, chunk) == 1 && chunk[0] * 4 <= (4u << 20),
       "big tensor chunked to <= 4 MiB (chunk %llu floats)", (unsigned long long)chunk[0]);
    ok(H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &nelmts, cd, 0, NULL, NULL) >= 0, "fletcher32 filter on");
    H5Pclose(dcpl);
    H5Dclose(d);
    hid_t y = H5Dopen2(f, "/meta/config.yaml", H5P_DEFAULT);
    hid_t ty = y >= 0 ? H5Dget_type(y) : -1;
    ok(ty >= 0 && H5Tget_size(ty) == yl, "config YAML stored as a dataset of %zu bytes", yl);
    if (ty >= 0) H5Tclose(ty);
    if (y >= 0) H5Dclose(y);
    int64_t sa = -1, fl = -1;
    hid_t a = H5Aopen(f, "step", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, &sa);
    H5Aclose(a);
    a = H5Aopen(f, "last_layer", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, &fl);
    H5Aclose(a);
    ok(sa == 5 && fl == 2, "step and layer range as attributes (step %lld, last_layer %lld)", (long long)sa, (long long)fl);
    H5Fclose(f);

    /* ---- load errors name the tensor ---- */
    ap_ckpt *ck = NULL;
    ok(ap_ckpt_open(dir, &ck, err, sizeof err) == 0, "open checkpoint_dir: %s", err);
    float buf[16 * 16];
    ap_ckpt_tensor q = {"model.layers.0.self_attn.q_proj.weight", 2, {16, 8}, buf, NULL, NULL};
    ok(ap_ckpt_load_tensors(ck, &q, 1, err, sizeof err) < 0 && strstr(err, "q_proj") && strstr(err, "[16, 16]") &&
           strstr(err, "[16, 8]"),
       "shape mismatch names tensor and both shapes: %s", err);
    ap_ckpt_tensor nx = {"model.layers.9.self_attn.q_proj.weight", 2, {16, 16}, buf, NULL, NULL};
    ok(ap_ckpt_load_tensors(ck, &nx, 1, err, sizeof err) < 0 && strstr(err, "model.layers.9.self_attn.q_proj.weight"),
       "missing tensor is named: %s", err);
    synth_model m3 = m;
    m3.hidden = 32;
    char *j3 = synth_config_json(&m3);
    ok(ap_ckpt_check_model_config(ck, j3, err, sizeof err) < 0 && strstr(err, "hidden_size is 16 in the checkpoint, 32"),
       "other model config named by key: %s", err);
    free(j3);
    ok(ap_ckpt_check_model_config(ck, json, err, sizeof err) == 0, "same model config accepted");
    ap_ckpt_close(ck);

    /* ---- saving an already committed step rewrites nothing ---- */
    synth_fill(&st, 4);
    ok(save1(dir, 5, &st, yaml, json, 0) == 0, "re-save of committed step 5 returns 0");
    ok(ap_ckpt_load(dir, NULL, NULL, st.t, st.n, MPI_COMM_SELF, err, sizeof err) == 0 && synth_check(&st, 3, NULL) == 0,
       "step 5 still holds the first save's values");

    /* ---- an interrupted save's directory is removed by the next save ---- */
    snprintf(p, sizeof p, "%s/step_00000006", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/step_00000006/stage_000.h5.tmp", dir);
    FILE *junk = fopen(p, "w");
    fputs("half a file", junk);
    fclose(junk);
    synth_fill(&st, 3);
    ok(save1(dir, 7, &st, yaml, json, 0) == 0, "save step 7: %s", err);
    snprintf(p, sizeof p, "%s/step_00000006", dir);
    ok(!exists(p), "uncommitted step_00000006 removed");

    /* ---- keep_last ---- */
    for (int s = 8; s <= 10; s++) save1(dir, s, &st, yaml, json, 2);
    int present = 0;
    for (int s = 5; s <= 10; s++) {
        snprintf(p, sizeof p, "%s/step_%08d", dir, s);
        present |= exists(p) << s;
    }
    ok(present == ((1 << 9) | (1 << 10)), "keep_last 2 keeps step 9 and 10 only (mask %#x)", present);
    char lp[1024];
    ok(ap_ckpt_find_latest(dir, lp, sizeof lp, err, sizeof err) == 1 && strstr(lp, "step_00000010"), "latest is step 10");
    snprintf(p, sizeof p, "%s/latest", dir);
    unlink(p);
    ok(ap_ckpt_find_latest(dir, lp, sizeof lp, err, sizeof err) == 1 && strstr(lp, "step_00000010"),
       "without the link, the newest committed step is found");

    /* ---- refused saves leave no commit ---- */
    ap_ckpt_state s2 = base_state(11, yaml, json);
    s2.pp = 2;
    ap_ckpt_stage one = {0, 0, 0, 2, st.t, st.n};
    ok(ap_ckpt_save(dir, &s2, &one, 1, NULL, MPI_COMM_SELF, err, sizeof err) < 0 && strstr(err, "needs 2"),
       "pp=2 with one stage file refused: %s", err);
    snprintf(p, sizeof p, "%s/step_00000011/COMMITTED", dir);
    ok(!exists(p), "no COMMITTED for the refused save");
    ap_ckpt_stage twice[2] = {{0, 0, 0, 1, st.t, 1}, {1, 0, 1, 2, st.t, 1}};
    ok(ap_ckpt_save(dir, &s2, twice, 2, NULL, MPI_COMM_SELF, err, sizeof err) < 0 && strstr(err, st.t[0].name),
       "the same tensor in two stages refused: %s", err);
    ap_ckpt_tensor slash = {"model/x", 1, {4}, buf, NULL, NULL};
    ap_ckpt_stage sl = {0, 0, 0, 0, &slash, 1};
    s2.pp = 1;
    ok(ap_ckpt_save(dir, &s2, &sl, 1, NULL, MPI_COMM_SELF, err, sizeof err) < 0 && strstr(err, "model/x"),
       "a name with '/' refused: %s", err);
    s2.pp = 0;
    ok(ap_ckpt_save(dir, &s2, &sl, 1, NULL, MPI_COMM_SELF, err, sizeof err) < 0 && strstr(err, "pp 0"),
       "pp 0 refused: %s", err);
    ok(ap_ckpt_find_latest(dir, lp, sizeof lp, err, sizeof err) == 1 && strstr(lp, "step_00000010"),
       "step 10 is still the latest");

    /* ---- moments not saved ---- */
    char dir2[600];
    snprintf(dir2, sizeof dir2, "%s/nomom", tmpl);
    ap_ckpt_tensor pm = {"model.norm.weight", 1, {16}, buf, NULL, NULL};
    ap_ckpt_state s3 = base_state(1, NULL, NULL);
    ap_ckpt_stage ps = {0, 0, 0, 0, &pm, 1};
    ok(ap_ckpt_save(dir2, &s3, &ps, 1, NULL, MPI_COMM_SELF, err, sizeof err) == 0, "save params without moments: %s", err);
    float m1[16], m2[16];
    ap_ckpt_tensor want = {"model.norm.weight", 1, {16}, buf, m1, m2};
    ok(ap_ckpt_load(dir2, NULL, NULL, &want, 1, MPI_COMM_SELF, err, sizeof err) < 0 && strstr(err, "without AdamW moments"),
       "asking for moments that were not saved is an error: %s", err);

    synth_free(&st);
    free(yaml);
    free(json);
    snprintf(p, sizeof p, "rm -rf '%s'", tmpl);
    ok(system(p) == 0, "cleanup");
    MPI_Finalize();
    return tap_done();
}
