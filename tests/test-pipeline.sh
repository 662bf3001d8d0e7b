#!/bin/sh
# The pipeline proofs on 4 MPI ranks: every schedule x (pp, dp) against one
# process (test-pipeline), then the training loop with the pipeline engine
# against the loop with the single-process engine (test-pipeline-train).
# TAP from both, renumbered into one stream.
d="${top_builddir:-.}/tests"
{ ${MPIRUN:-mpirun} -np 4 "$d/test-pipeline"; echo "rc $?"; ${MPIRUN:-mpirun} -np 4 "$d/test-pipeline-train"; echo "rc $?"; } |
awk '/^ok |^not ok /{n++; sub(/^(not )?ok [0-9]+/, ($1 == "not" ? "not ok " : "ok ") n); print; next}
     /^rc /{if ($2 != 0) bad = 1; next}
     /^1\.\./{next}
     {print}
     END{if (bad) {n++; print "not ok " n " - an mpirun exited non-zero"} print "1.." n}'
