#!/bin/sh
# The guide's CustomModel through the pipeline on 2 MPI ranks against one
# process (test-custom-pipeline); rank 0's plan lines pass through as comments.
d="${top_builddir:-.}/tests"
${MPIRUN:-mpirun} -np 2 "$d/test-custom-pipeline" > "${TMPDIR:-/tmp}/custom-pipe.$$" 2>&1
rc=$?
awk '/^ok |^not ok |^1\.\./{print; next} {print "# " $0}' "${TMPDIR:-/tmp}/custom-pipe.$$"
rm -f "${TMPDIR:-/tmp}/custom-pipe.$$"
[ $rc -eq 0 ] || { echo "not ok - mpirun exited $rc"; exit 1; }
