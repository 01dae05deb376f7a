#!/usr/bin/env bash
# A deploy pipeline's database step, with psql: apply pending migration files in name order, but
# never a contract (drop) migration whose Switchyard gate fails, and record every expand file
# once applied so release managers can leave `off`.
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
# Exit codes: 0 done; 1 the gate refused a contract migration (nothing was applied); other:
# a failure of psql or switchyard (see their messages).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${MIGRATIONS_DIR:-$here/migrations}"
applied="${APPLIED_LIST:-$dir/applied.txt}"
switchyard="${SWITCHYARD:-switchyard}"
: "${DATABASE_URL:?set DATABASE_URL}" "${SWITCHYARD_SERVER:?set SWITCHYARD_SERVER}" "${SWITCHYARD_TOKEN:?set SWITCHYARD_TOKEN}"
touch "$applied"

# 1. Before touching the schema: every pending contract file's gate must pass.
"$switchyard" gate --migrations-dir "$dir" --applied-list "$applied"

# 2. Apply what is pending, one transaction per file.
for file in "$dir"/*.sql; do
  name="$(basename "$file")"
  grep -qxF "$name" "$applied" && continue
  echo "applying $name"
  psql "$DATABASE_URL" --quiet --no-psqlrc --set ON_ERROR_STOP=1 --single-transaction --file "$file"
  echo "$name" >> "$applied"
done

# 3. Tell Switchyard what every applied file with a header did (expand applied / contracted).
#    Recording is idempotent, so a record that failed on an earlier run is made now.
for file in "$dir"/*.sql; do
  name="$(basename "$file")"
  grep -qxF "$name" "$applied" || continue
  if grep -qE '^-- switchyard: (expand|contract) ' "$file"; then
    "$switchyard" record --sql-file "$file" --reason "deploy applied $name"
  fi
done
