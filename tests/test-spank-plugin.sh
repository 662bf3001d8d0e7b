#!/bin/sh
# test-spank-plugin.sh - spank_autopipe.so's ELF: exports only what Slurm
# looks up and needs no library but libc (TAP; skipped without the plugin).
so="$top_builddir/.libs/spank_autopipe.so"
[ -f "$so" ] || { echo "1..0 # SKIP spank_autopipe.so not built (install libslurm-dev)"; exit 0; }
command -v nm >/dev/null && command -v readelf >/dev/null || { echo "1..0 # SKIP nm/readelf missing"; exit 0; }
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
defined=$(nm -D --defined-only "$so" | awk '{print $3}' | sort)
undef=$(nm -D --undefined-only "$so" | awk '$1 == "U" {print $2}' | sed 's/@.*//' | sort)
needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "# exports: $(echo $defined)"
echo "# needs: $needed"
for s in plugin_name plugin_type plugin_version spank_plugin_version slurm_spank_init \
         slurm_spank_init_post_opt slurm_spank_local_user_init slurm_spank_task_init; do
  t "exports $s" 'echo "$defined" | grep -qx "$s"'
done
t "exports nothing else (version script)" \
  '[ -z "$(echo "$defined" | grep -v -E "^(slurm_spank_[a-z_]+|plugin_name|plugin_type|plugin_version|spank_plugin_version)$")" ]'
t "needs only libc (no libmpi, libgomp, libslurm)" '[ "$needed" = "libc.so.6" ]'
t "its own undefined symbols are Slurm's spank_*/slurm_* (the rest is libc)" \
  '[ -z "$(echo "$undef" | grep -v -E "^(spank_|slurm_)" | grep -v -x -E "snprintf|vsnprintf|strchr|strlen|strncmp|strnlen|memcpy|memset|__stack_chk_fail|__snprintf_chk|__vsnprintf_chk|__memcpy_chk")" ]'
t "plugin_type is spank" 'strings "$so" | grep -qx spank'
echo "1..$n"
exit $fail
