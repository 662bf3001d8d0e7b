#!/bin/sh
# Runs tests/test-pipeline (every schedule x (pp, dp) against one process) on 4 MPI ranks.
exec ${MPIRUN:-mpirun} -np 4 "${top_builddir:-.}/tests/test-pipeline"
