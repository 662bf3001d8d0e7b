# train-common.sh - a tiny training config and helpers shared by the Slurm
# training tests (sourced after tests/slurm/cluster.sh has started a cluster).
#
# tiny_yaml FILE PP DP: a 4-layer, hidden-32 Llama on the built-in text, 3 steps
# of batch 4 x seq_len 32, checkpoint at the end; `distributed` says PP x DP so
# a test can tell whether the flags or the YAML decided the mesh.
tiny_yaml() {
  cat >"$1" <<YAML
distributed:
  pp_size: $2
  dp_size: $3
  tp_size: 1
autopipeline:
  pp_schedule: 1f1b
  pp_microbatch_size: 1
model:
  num_hidden_layers: 4
  hidden_size: 32
  intermediate_size: 64
  num_attention_heads: 4
  num_key_value_heads: 2
dataloader:
  batch_size: 4
  seq_len: 32
step_scheduler:
  max_steps: 3
  ckpt_every_steps: 3
  val_every_steps: 3
checkpoint:
  enabled: true
  keep_last: 2
rng:
  seed: 1234
logging:
  log_every_steps: 1
  progress: "off"
YAML
}

# same_losses A.jsonl B.jsonl: every step's loss, grad_norm and val_loss of A
# agree with B's to 1e-6 relative (tests/metrics_compare.sh).
. "$top_srcdir/tests/metrics_compare.sh"
same_losses() { same_metrics "$1" "$2" 1e-6; }
