#!/bin/sh
# test-plan.sh - `autopipe plan`: mesh groups, stage placement, the guide's
# example splits, module lists, parameter shares and exit codes (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
A="$AUTOPIPE"
has() { grep -qF -- "$1" "$tmp/out"; }

"$A" plan > "$tmp/out" 2>&1; rc=$?
t "plan without a file: the built-in config (pp 2) exits 0" '[ $rc -eq 0 ] && has "mesh: pp 2 x dp 1 x tp 1 = 2 ranks" && has "Stage 0 (first): layers 0-1" && has "Stage 1 (last): layers 2-3"'
t "microbatch count from batch_size / pp_microbatch_size" 'has "microbatches: dataloader.batch_size 8 / pp_microbatch_size 1 = 8 per step per dp rank"'
t "built-in stages: embed first, norm and lm_head last, 50% each" 'has "  - model.embed_tokens" && has "  - lm_head" && [ $(grep -c "(50.0%)" "$tmp/out") -eq 2 ]'

"$A" plan --distributed.pp_size 2 --model.num_hidden_layers 32 > "$tmp/out" 2>&1
t "guide: 32 layers over 2 stages are 0-15 and 16-31" 'has "Stage 0 (first): layers 0-15" && has "Stage 1 (last): layers 16-31"'
"$A" plan --distributed.pp_size 4 --model.num_hidden_layers 32 --max-modules 0 > "$tmp/out" 2>&1
t "guide: 32 layers over 4 stages are 8 each" 'has "Stage 0 (first): layers 0-7" && has "Stage 1: layers 8-15" && has "Stage 2: layers 16-23" && has "Stage 3 (last): layers 24-31"'
t "guide: stage 3 lists layers.31, norm, lm_head, rotary_emb" 'sed -n "/^Stage 3/,\$p" "$tmp/out" | tr -d " " | tr "\n" " " | grep -q -- "-model.layers.31 -model.norm -lm_head -model.rotary_emb"'

"$A" plan --distributed.pp_size 2 --distributed.dp_size 2 --distributed.tp_size 2 > "$tmp/out" 2>&1
t "mesh 2x2x2: pp groups" 'has "pp groups (4 x 2 ranks): [0 4] [1 5] [2 6] [3 7]"'
t "mesh 2x2x2: dp groups" 'has "dp groups (4 x 2 ranks): [0 2] [1 3] [4 6] [5 7]"'
t "mesh 2x2x2: tp groups" 'has "tp groups (4 x 2 ranks): [0 1] [2 3] [4 5] [6 7]"'
t "mesh 2x2x2: global ranks of each pp rank" 'has "pp rank 0 (global ranks 0-3): stage 0" && has "pp rank 1 (global ranks 4-7): stage 1"'

"$A" plan --distributed.pp_size 4 --model.num_hidden_layers 32 --autopipeline.pp_schedule zbv --dataloader.batch_size 4 > "$tmp/out" 2>&1
t "fewer microbatches than stages: bubble warning" 'has "fewer than the stages"'
t "zbv: V placement, rank 0 holds stages 0 and 7" 'has "zbv (multi-stage, v placement): 8 stages, 2 per pp rank" && has "pp rank 0 (global rank 0): stages 0 7" && has "pp rank 3 (global rank 3): stages 3 4"'
"$A" plan --distributed.pp_size 4 --model.num_hidden_layers 32 --autopipeline.pp_schedule interleaved_1f1b --autopipeline.layers_per_stage 4 > "$tmp/out" 2>&1
t "guide: layers_per_stage 4 of 32 on pp 4 is 8 stages, loop placement (0, 4)" 'has "8 stages, 2 per pp rank" && has "pp rank 0 (global rank 0): stages 0 4"'

"$A" plan --max-modules 2 > "$tmp/out" 2>&1
t "--max-modules caps each stage's list like pretty_print_stages" 'has "  ... (2 more)" && [ $(grep -c "^  - " "$tmp/out") -eq 4 ]'
"$A" plan --distributed.pp_size 3 --model.num_hidden_layers 7 > "$tmp/out" 2>&1
t "uneven split: first stage gets the extra layer; shares add to 100%" 'has "Stage 0 (first): layers 0-2" && has "Stage 2 (last): layers 5-6" && [ "$(grep -o "([0-9.]*%)" "$tmp/out" | tr -d "(%)" | awk "{s+=\$1} END {printf \"%.0f\", s}")" = 100 ]'
"$A" plan --model.tie_word_embeddings true > "$tmp/out" 2>&1
t "tied embeddings: a note on the last stage's copy" 'has "(tied embeddings)" && has "note: stages hold"'

cat > "$tmp/manual.yaml" <<'YAML'
distributed:
  pp_size: 2
autopipeline:
  module_fqns_per_model_part:
    - [model.embed_tokens, model.rotary_emb, model.layers.0]
    - [model.rotary_emb, model.layers.1, model.layers.2, model.layers.3, model.norm, lm_head]
YAML
"$A" plan --config "$tmp/manual.yaml" > "$tmp/out" 2>&1; rc=$?
t "manual split from a file" '[ $rc -eq 0 ] && has "manual split" && has "Stage 0 (first): layer 0," && has "Stage 1 (last): layers 1-3"'
"$A" plan --config "$tmp/manual.yaml" --autopipeline.module_fqns_per_model_part "[[model.layers.0, model.embed_tokens, model.layers.1], [model.layers.3, model.layers.2, model.norm, lm_head]]" > "$tmp/out" 2>&1; rc=$?
t "bad manual split: exit 2 and one line naming the problem" '[ $rc -eq 2 ] && [ $(wc -l < "$tmp/out") -eq 1 ] && has "model.layers.3 comes before model.layers.2"'
"$A" plan --distributed.pp_size 2 --model.num_hidden_layers 9 --autopipeline.layers_per_stage 3 --autopipeline.pp_schedule looped_bfs > "$tmp/out" 2>&1; rc=$?
t "stage count not a multiple of pp: exit 2 with the reason" '[ $rc -eq 2 ] && has "must be divisible by pipeline parallel size (2)"'
"$A" plan --autopipeline.pp_schedule 2f2b > "$tmp/out" 2>&1; rc=$?
t "unknown schedule: exit 2" '[ $rc -eq 2 ] && has "unknown schedule"'
"$A" plan --max-modules many > "$tmp/out" 2>&1; rc=$?
t "bad --max-modules: exit 2" '[ $rc -eq 2 ] && has "--max-modules"'
"$A" plan extra > "$tmp/out" 2>&1; rc=$?
t "stray argument: exit 2" '[ $rc -eq 2 ] && has "unexpected argument"'
"$A" plan --config "$tmp/missing.yaml" > "$tmp/out" 2>&1; rc=$?
t "missing config file: exit 2" '[ $rc -eq 2 ] && has "missing.yaml"'
mkdir -p "$tmp/hf"
printf '{"model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true}\n' > "$tmp/hf/config.json"
"$A" plan --model.pretrained_model_name_or_path "$tmp/hf" --model._target_ nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained > "$tmp/out" 2>&1; rc=$?
t "from_pretrained: layers and shapes from the directory's config.json" '[ $rc -eq 0 ] && has "model: llama, 6 layers, hidden 32, heads 4 (kv 2, head_dim 8), vocab 100: 58,912 parameters (tied embeddings)" && has "Stage 1 (last): layers 3-5"'
"$A" plan --model.pretrained_model_name_or_path "$tmp/nohf" > "$tmp/out" 2>&1; rc=$?
t "from_pretrained: a missing directory is a clear error" '[ $rc -eq 2 ] && has "nohf"'
t "plan --help lists the config keys" '"$A" plan --help | grep -q "num_hidden_layers=4"'
t "autopipe help plan" '"$A" help plan | grep -q "usage: autopipe plan"'
t "autopipe help lists plan and config" '"$A" help | grep -q "^  plan " && "$A" help | grep -q "^  config "'
echo "1..$n"
exit $fail
