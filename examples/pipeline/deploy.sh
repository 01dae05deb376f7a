#!/usr/bin/env bash
# A deploy pipeline's database step, with psql: apply pending migration files in name order, but
# never a contract (drop) or retire (rename out of use) migration whose Switchyard gate fails,
# and record every headed file once applied: an expand so release managers can leave `off`, a
# retire so the drop's probation starts, a restore so the front may move again.
#
#   DATABASE_URL        the application's database (postgres://…)
#   SWITCHYARD_SERVER   the flag server's HTTP URL
#   SWITCHYARD_TOKEN    a token with the `gate` role
#   MIGRATIONS_DIR      default: migrations/ beside this script
#   APPLIED_LIST        the file naming applied migrations, one per line (default: applied.txt
#                       beside the migrations; a real pipeline keeps it in the database or uses
#                       its migration tool's table: see `switchyard gate --help`)
#   SWITCHYARD          the switchyard binary (default: switchyard on PATH)
#
# Exit codes: 0 done; 1 the gate refused a contract or retire migration (nothing was applied);
# other: a failure of psql or switchyard (see their messages).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${MIGRATIONS_DIR:-$here/migrations}"
applied="${APPLIED_LIST:-$dir/applied.txt}"
switchyard="${SWITCHYARD:-switchyard}"
: "${DATABASE_URL:?set DATABASE_URL}" "${SWITCHYARD_SERVER:?set SWITCHYARD_SERVER}" "${SWITCHYARD_TOKEN:?set SWITCHYARD_TOKEN}"
touch "$applied"

# 1. Before touching the schema: every pending contract file's gate must pass, and every
#    pending retire file's gate but its retire probation (which only starts with the retire).
#    A restore file always passes: it gives the retired names back.
"$switchyard" gate --migrations-dir "$dir" --applied-list "$applied"

# 2. Apply what is pending, one transaction per file. Retire and restore files (written by
#    `switchyard retire-sql` / `restore-sql`) set lock_timeout and hold their own BEGIN ... COMMIT.
for file in "$dir"/*.sql; do
  name="$(basename "$file")"
  grep -qxF "$name" "$applied" && continue
  echo "applying $name"
  single=(--single-transaction)
  grep -qE '^-- switchyard: (retire|restore) ' "$file" && single=()
  psql "$DATABASE_URL" --quiet --no-psqlrc --set ON_ERROR_STOP=1 "${single[@]}" --file "$file"
  echo "$name" >> "$applied"
done

# 3. Tell Switchyard what every applied file with a header did (expand applied, contracted,
#    retired, restored). Recording is idempotent, so a record that failed on an earlier run is
#    made now. A retire and a restore undo each other, so of a migration's applied retire and
#    restore files only the last one says what the database has now: only it is recorded.
declare -A last_rename=()
for file in "$dir"/*.sql; do
  grep -qxF "$(basename "$file")" "$applied" || continue
  while read -r key; do
    last_rename[$key]="$file"
  done < <(sed -nE 's/^-- switchyard: (retire|restore) ([^ ]+).*/\2/p' "$file")
done
for file in "$dir"/*.sql; do
  name="$(basename "$file")"
  grep -qxF "$name" "$applied" || continue
  record=false
  grep -qE '^-- switchyard: (expand|contract) ' "$file" && record=true
  for key in "${!last_rename[@]}"; do
    [ "${last_rename[$key]}" = "$file" ] && record=true
  done
  if $record; then
    "$switchyard" record --sql-file "$file" --reason "deploy applied $name"
  fi
done
