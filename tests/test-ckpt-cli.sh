#!/bin/sh
# test-ckpt-cli.sh - `autopipe ckpt info|ls|verify|diff|export`: output,
# --json, exit statuses (0 ok, 1 damaged/different, 2 usage) (TAP).
H="$top_builddir/tests/ckpt-helper"
A="$AUTOPIPE"
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
n=0; fail=0
t() { n=$((n+1)); if eval "$2" >"$T/out" 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; sed 's/^/# /' "$T/out"; fail=1; fi; }
skip() { n=$((n+1)); echo "ok $n # SKIP $1"; }
st() { "$@" >/dev/null 2>&1; echo $?; }

t "save pp=2 spr=2 checkpoint (4 stages) and a pp=1 copy" '$MPIRUN -np 2 $H save $T/c --pp 2 --spr 2 --step 4 && $MPIRUN -np 1 $H reshard $T/c $T/one --pp 1'
t "ckpt --help exits 0" '$A ckpt --help | grep -q "verify DIR"'
t "help ckpt lists the subcommands" '$A help ckpt | grep -q "export DIR --to OUT"'
t "no subcommand: exit 2" '[ $(st $A ckpt) -eq 2 ]'
t "unknown subcommand: exit 2, named" '[ $(st $A ckpt frob $T/c) -eq 2 ] && $A ckpt frob $T/c 2>&1 | grep -q frob'
t "diff with one directory: exit 2" '[ $(st $A ckpt diff $T/c) -eq 2 ]'
t "export without --to: exit 2" '[ $(st $A ckpt export $T/c) -eq 2 ]'
t "bad --rtol: exit 2" '[ $(st $A ckpt diff $T/c $T/one --rtol x) -eq 2 ]'
t "unknown option: exit 2" '[ $(st $A ckpt info --bogus $T/c) -eq 2 ]'

$A ckpt info $T/c/latest >"$T/info" 2>&1
t "info: step" 'grep -q "^step  *4 " $T/info'
t "info: topology" 'grep -q "pp=2 dp=1 tp=1 stages_per_rank=2 schedule=interleaved_1f1b (4 stage files)" $T/info'
t "info: layer ranges per stage" 'grep -q "stage_002.h5 *stage 2 *layers \[4, 6)" $T/info'
t "info: model summary" 'grep -q "num_hidden_layers=8" $T/info'
t "info: totals (75 tensors, 24848 parameters)" 'grep -q "75 tensors, 24848 parameters" $T/info'
t "info --json: step and 4 files" '$A ckpt info --json $T/c > $T/j && grep -q "\"step\":.*4" $T/j && [ $(grep -c "\"name\":.*stage_" $T/j) -eq 4 ]'

t "ls: one line per tensor (75)" '[ $($A ckpt ls $T/c | wc -l) -eq 75 ]'
t "ls: shape and dtype" '$A ckpt ls $T/c | grep -q "model.layers.3.mlp.down_proj.weight *\[16, 40\] *float32 *stage_001.h5"'
t "ls --stage 3: only stage_003.h5" '$A ckpt ls --stage 3 $T/c > $T/l && [ -s $T/l ] && ! grep -v stage_003.h5 $T/l'
t "ls --stats: min max mean l2" '$A ckpt ls --stats $T/c | grep -q "model.norm.weight.* min -\?[0-9.e-]* max [0-9.e-]* mean [0-9.e-]* l2 [0-9.e]*"'
t "ls --stats is the same for both layouts" '$A ckpt ls --stats $T/c | sed "s/stage_[0-9]*.h5//" | sort > $T/s1 && $A ckpt ls --stats $T/one | sed "s/stage_[0-9]*.h5//" | sort > $T/s2 && cmp $T/s1 $T/s2'
t "ls --json --stats" '$A ckpt ls --json --stats $T/c | grep -q "\"l2\":"'

t "verify: ok, exit 0" '$A ckpt verify $T/c | grep -q "^ok: .* 4 files, 75 tensors"'
t "verify --json: ok true" '$A ckpt verify --json $T/c | grep -q "\"ok\":.*true"'
cp -a $T/c $T/dmg; rm $T/dmg/step_00000004/stage_002.h5
t "verify of a damaged checkpoint lists the missing file and layers, exit 1" '[ $(st $A ckpt verify $T/dmg) -eq 1 ] && $A ckpt verify $T/dmg | grep -q "stage_002.h5: missing"'
t "verify --json lists problems" '$A ckpt verify --json $T/dmg | grep -q "\"ok\":.*false"'

t "diff: pp=2x2 vs pp=1 match, exit 0" '$A ckpt diff $T/c $T/one | tail -1 | grep -q "^match: 75 tensors"'
t "save seed 2 (other values)" '$MPIRUN -np 1 $H save $T/seed2 --pp 1 --seed 2 --step 4'
t "diff: different values exit 1, per-tensor max abs/rel" '[ $(st $A ckpt diff $T/c $T/seed2) -eq 1 ] && $A ckpt diff $T/c $T/seed2 | grep -q "^DIFF  model.norm.weight *param abs [0-9.e-]* rel"'
t "diff --rtol 10: within tolerance, exit 0" '$A ckpt diff --rtol 10 $T/c $T/seed2'
t "diff --json" '$A ckpt diff --json $T/c $T/one | grep -q "\"match\":.*true"'
t "save a 4-layer model" '$MPIRUN -np 1 $H save $T/small --pp 1 --layers 4 --step 4'
t "diff: tensors only in one side, exit 1" '[ $(st $A ckpt diff $T/c $T/small) -eq 1 ] && $A ckpt diff $T/c $T/small | grep -q "model.layers.7.mlp.up_proj.weight *only in A"'

t "export: config.json + model.safetensors" '$A ckpt export $T/c/latest --to $T/hf && [ -s $T/hf/config.json ] && [ -s $T/hf/model.safetensors ] && [ ! -e $T/hf/model.safetensors.index.json ]'
t "export: config.json is the checkpoint's" 'grep -q "\"num_hidden_layers\": 8" $T/hf/config.json'
t "export sharded above --max-shard-size 30KB: index + shards" '$A ckpt export $T/c --to $T/hf2 --max-shard-size 30KB && [ -s $T/hf2/model.safetensors.index.json ] && ls $T/hf2/model-00001-of-0000[2-9].safetensors'
if command -v python3 >/dev/null 2>&1; then
cat >"$T/st.py" <<'PY'
import json, struct, sys, os, glob
# read safetensors with the standard library: header, offsets, values
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
        size = os.path.getsize(path); end = 0; out = {}
        for k, v in h.items():
            if k == "__metadata__": continue
            b, e = v["data_offsets"]; assert v["dtype"] == "F32"
            cnt = 1
            for d in v["shape"]: cnt *= d
            assert e - b == 4 * cnt, k
            f.seek(base + b); out[k] = struct.unpack("<%df" % cnt, f.read(e - b)); end = max(end, e)
        assert base + end == size, (path, base + end, size)
        return out
one = tensors(sys.argv[1] + "/model.safetensors")
idx = json.load(open(sys.argv[2] + "/model.safetensors.index.json"))
sh = {}
for p in sorted(set(idx["weight_map"].values())): sh.update(tensors(sys.argv[2] + "/" + p))
assert sh == one and len(one) == 75, (len(one), len(sh))
assert idx["metadata"]["total_size"] == 4 * sum(len(v) for v in one.values())
l2 = sum(x * x for x in one["model.norm.weight"]) ** 0.5
print("%.6g" % l2)
PY
t "export: safetensors parse (stdlib), shards == single file, 75 tensors" 'python3 $T/st.py $T/hf $T/hf2'
cat >"$T/bf.py" <<'PY'
import json, struct, sys
def hdr(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; return f, json.loads(f.read(n)), 8 + n
f, h, b = hdr(sys.argv[1] + "/model.safetensors"); g, k, c = hdr(sys.argv[2] + "/model.safetensors")
worst = 0
for name, v in h.items():
    if name == "__metadata__": continue
    w = k[name]; assert w["dtype"] == "BF16" and w["shape"] == v["shape"], name
    f.seek(b + v["data_offsets"][0]); n = (v["data_offsets"][1] - v["data_offsets"][0]) // 4
    x = struct.unpack("<%df" % n, f.read(4 * n))
    g.seek(c + w["data_offsets"][0]); y = struct.unpack("<%dH" % n, g.read(2 * n))
    for a, e in zip(x, y):
        r = struct.unpack("<f", struct.pack("<I", e << 16))[0]
        worst = max(worst, abs(a - r) / max(abs(a), 1e-30))
assert worst <= 2 ** -8, worst
PY
t "export --dtype bfloat16: BF16 within bf16 rounding of the F32 export" '$A ckpt export $T/c --to $T/hfb --dtype bfloat16 && python3 $T/bf.py $T/hf $T/hfb'
t "export: values match ckpt ls --stats (L2 of model.norm.weight)" 'l2=$(python3 $T/st.py $T/hf $T/hf2) && $A ckpt ls --stats $T/c | grep "^model.norm.weight " | grep -q "l2 $l2\$"'
else
skip "python3 not found: safetensors structure not checked"; skip "python3 not found"; skip "python3 not found"
fi
t "export of a damaged checkpoint fails, exit 1" '[ $(st $A ckpt export $T/dmg --to $T/hf3) -eq 1 ]'

if command -v h5dump >/dev/null 2>&1; then
t "h5ls lists tensors by FQN" 'h5ls -r $T/c/latest/stage_000.h5 | grep -q "/tensors/model.embed_tokens.weight/exp_avg_sq Dataset {96, 16}"'
t "h5dump reads metadata attributes and the config text" 'h5dump -a /step $T/c/latest/stage_000.h5 | grep -q "(0): 4" && h5dump -d /meta/config.json $T/c/latest/stage_000.h5 | grep -q model_type'
else
skip "h5ls not found"; skip "h5dump not found"
fi
echo "1..$n"
exit $fail
