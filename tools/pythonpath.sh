# Sourced by tools/devtest and tools/gpu_suite: every source root of the repo, as a PYTHONPATH.
# (Pants finds them from pants.toml's root_patterns; these scripts run without Pants.)
tjx_pythonpath() {
  local root="$1" src paths=()
  for src in "$root"/packages/*/src "$root"/packages/*/tests "$root"/packages/*/benchmarks; do
    [[ -d "$src" ]] && paths+=("$src")
  done
  paths+=("$root/apps/trainer" "$root/apps/eval" "$root/apps/experiments" "$root/tools" "$root/tests-integration" "$root/tests-support")
  (IFS=:; echo "${paths[*]}")
}
