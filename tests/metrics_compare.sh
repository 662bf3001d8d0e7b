# metrics_compare.sh - sourced by the tests that compare two training runs.
#
# same_metrics A.jsonl B.jsonl TOL: 0 when every loss, grad_norm and val_loss
# of A's metrics file is in B on the same line and agrees to TOL relative, and
# A holds at least 7 of them (3 steps and a validation); prints what differs.
same_metrics() {
  awk -F'[,:} ]+' -v tol="$3" '
  { for (i = 1; i < NF; i++) if ($i ~ /"(loss|grad_norm|val_loss)"/) v[NR == FNR ? "a" : "b", FNR, $i] = $(i + 1) }
  END {
      bad = 0; k = 0
      for (key in v) {
          split(key, p, SUBSEP); if (p[1] != "a") continue
          k++; b = v["b", p[2], p[3]]; a = v[key]
          d = b - a; if (d < 0) d = -d; m = a < 0 ? -a : a
          if (b == "" || d > tol * m) { bad = 1; print "# " p[3] " line " p[2] ": " a " vs " b }
      }
      exit (bad || k < 7)
  }' "$1" "$2"
}
