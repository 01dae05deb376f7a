//! Human-readable output of the typed answers.
//!
//! Every string in the server's answers is untrusted: anyone with an operator token writes
//! reasons and descriptions, and clients choose their service and instance names. Printed raw,
//! an escape sequence in one of them would clear, recolour or rewrite the reader's terminal, and
//! a newline would forge a line of output. So each such string goes through [`cell`] before it
//! is placed in a line, and the whole text through [`terminal`] before it is printed (`mod.rs`),
//! which also covers the few lines composed outside this module. `--json` is not escaped here:
//! JSON's own escaping already carries control characters as `\u001b`.

use std::borrow::Cow;
use std::time::Duration;
use switchyard_domain::migration::BackfillStatus;
use switchyard_domain::traffic::{Histogram, TrafficCounts, latency_bucket_label};
use switchyard_domain::{BasisPoints, Migration, Stage};
use switchyard_proto::json;

/// A string from the server as one cell of a line: every control character (C0 including
/// newline and tab, DEL, C1) escaped, so it can neither drive the terminal nor start a line.
pub(super) fn cell(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// The whole human output (or an error message) as it is printed: control characters escaped
/// except the newlines the output is laid out with. The net under [`cell`]: nothing that
/// reaches the terminal can hold an escape sequence, whoever composed the line.
pub(super) fn terminal(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// `char::is_control` is exactly C0, DEL and C1; each becomes Rust's `\u{1b}` spelling.
fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A multi-line field (a description): its lines kept, each continuation indented under the
/// field's column so that no line of it can pass for another field.
fn paragraph(text: &str, indent: usize) -> String {
    text.split('\n')
        .map(|line| cell(line).into_owned())
        .collect::<Vec<_>>()
        .join(&format!("\n{:indent$}", ""))
}

pub(super) fn time(ms: Option<i64>) -> String {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// "dual_write at 25% (the rest at off)".
fn front_text(m: &Migration) -> String {
    let front = m.front();
    match m.stage {
        Stage::Off => "off".to_owned(),
        Stage::Contracted => "contracted".to_owned(),
        s if front.rollout.is_full() => format!("{s} at 100%"),
        s => format!(
            "{s} at {} (the rest at {})",
            m.rollout_bp,
            front.stage_for(Some(u32::MAX))
        ),
    }
}

/// A server string as a cell, or "-" when empty.
fn or_dash(text: &str) -> Cow<'_, str> {
    if text.is_empty() {
        Cow::Borrowed("-")
    } else {
        cell(text)
    }
}

pub(super) fn migration(m: &Migration, verb: &str) -> String {
    let backfill = if m.has_backfill {
        let status = match m.backfill.status {
            BackfillStatus::None => "none",
            BackfillStatus::NotStarted => "not started",
            BackfillStatus::Running => "running",
            BackfillStatus::Complete => "complete",
        };
        let paused = if m.backfill.paused { ", paused" } else { "" };
        // Runners report progress in checkpoints, not in the migration's record.
        let progress = if m.backfill.rows_done > 0 {
            format!(
                " ({} of ~{} rows recorded)",
                m.backfill.rows_done, m.backfill.rows_total_estimate
            )
        } else {
            String::new()
        };
        format!(
            "{status}{paused}{progress}; progress: switchyard backfill status {}",
            m.key
        )
    } else {
        "none".to_owned()
    };
    let head = if verb.is_empty() {
        format!("{} (version {})", m.key, m.version)
    } else {
        format!("{verb} {} (now version {})", m.key, m.version)
    };
    format!(
        "{head}\n  front            {}\n  description      {}\n  owner            {}\n  entity kind      {}\n  expand applied   {}\n  backfill         {}\n  old shape stale  {}\n  soak             {}\n  expected         {}\n  database         {}\n  drops            {}\n  retire first     {}\n  updated          {}",
        front_text(m),
        // 19: the column the values start at.
        if m.description.is_empty() {
            "-".to_owned()
        } else {
            paragraph(&m.description, 19)
        },
        or_dash(&m.owner),
        or_dash(&m.entity_kind),
        if m.expand_applied { "yes" } else { "no" },
        backfill,
        if m.old_shape_stale {
            "yes (repair needed before old reads)"
        } else {
            "no"
        },
        switchyard_domain::time::format_duration(Duration::from_secs(m.soak_seconds)),
        or_dash(&m.expected_services.join(", ")),
        m.database.target.as_ref().map_or("-", |t| t.as_str()),
        or_dash(&m.database.old_shape_strings().join(", ")),
        match (m.retire_probation_seconds, m.retired_at_ms) {
            (None, _) => "no (the contract drops the old shape directly)".to_owned(),
            (Some(p), None) => format!(
                "yes, probation {} (not retired yet)",
                switchyard_domain::time::format_duration(Duration::from_secs(p))
            ),
            (Some(p), Some(at)) => format!(
                "yes, probation {}; retired {}",
                switchyard_domain::time::format_duration(Duration::from_secs(p)),
                time(Some(at))
            ),
        },
        time(Some(m.updated_at_ms)),
    )
}

pub(super) fn list(version: u64, migrations: &[Migration]) -> String {
    if migrations.is_empty() {
        return "no migrations yet; create one with `switchyard migration create`".to_owned();
    }
    let mut out = format!("{:<40} {:<36} {:>8} UPDATED\n", "KEY", "FRONT", "VERSION");
    for m in migrations {
        out.push_str(&format!(
            "{:<40} {:<36} {:>8} {}\n",
            m.key.as_str(),
            front_text(m),
            m.version.0,
            time(Some(m.updated_at_ms))
        ));
    }
    format!("{}\nsnapshot version {version}", out.trim_end())
}

pub(super) fn audit(page: &json::AuditPage) -> String {
    let front = |f: Option<json::AuditedFront>| match f {
        Some(f) => match BasisPoints::new(f.rollout_bp) {
            Ok(bp) => format!("{}@{bp}", f.stage),
            Err(_) => format!("{}@", f.stage),
        },
        None => "-".to_owned(),
    };
    let mut out = String::new();
    for e in &page.entries {
        // Id and version unpadded, as the CLI has always printed them.
        let (before, after) = e.fronts();
        out.push_str(&format!(
            "#{} v{} {} {:<20} {} -> {}\n        by {}{}: {}\n",
            e.id,
            e.version,
            time(Some(e.at_ms)),
            cell(&e.action),
            front(before),
            front(after),
            cell(&e.actor),
            // Four eyes: who approved it (or that an admin bypassed the approval).
            if e.approved_by.is_empty() {
                String::new()
            } else if e.approved_by.starts_with("approval bypassed") {
                format!(", {}", cell(&e.approved_by))
            } else {
                format!(", approved by {}", cell(&e.approved_by))
            },
            cell(&e.reason),
        ));
    }
    if out.is_empty() {
        return "no audit entries".to_owned();
    }
    if let Some(next) = page.next_before_id {
        out.push_str(&format!("(older entries: --before {next})"));
    }
    out.trim_end().to_owned()
}

pub(super) fn traffic(t: &json::Traffic) -> String {
    let row = |label: String, c: &TrafficCounts| {
        // The bucket's label as the domain writes it (the dashboard shows the same).
        let p99 = |h: &Histogram| {
            h.quantile_bucket(0.99)
                .map_or_else(|| "-".to_owned(), latency_bucket_label)
        };
        format!(
            "{label:<20} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>8}\n",
            c.old.reads,
            c.old.writes,
            c.old.errors,
            p99(&c.old.latency),
            c.new.reads,
            c.new.writes,
            c.new.errors,
            p99(&c.new.latency),
            c.comparisons,
            c.mismatches,
        )
    };
    if t.minutes.is_empty() {
        return format!("no traffic reported for {} in this window", cell(&t.key));
    }
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>8}\n",
        "MINUTE",
        "OLD R",
        "OLD W",
        "ERR",
        "P99",
        "NEW R",
        "NEW W",
        "ERR",
        "P99",
        "COMPARE",
        "MISMATCH"
    );
    for m in &t.minutes {
        out.push_str(&row(time(Some(m.minute_ms)), &m.counts.into()));
    }
    let total = TrafficCounts::from(t.total);
    out.push_str(&row("total".to_owned(), &total));
    out.push_str(&format!(
        "evaluations without entity: {}, on a fallback: {}",
        total.evaluations_without_entity, total.fallback_evaluations
    ));
    out.trim_end().to_owned()
}

pub(super) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("           {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn gate(report: &json::GateReport) -> String {
    let mut out = format!(
        "{}: the contract gate {}\n",
        cell(&report.key),
        if report.passed { "passes" } else { "fails" }
    );
    for c in &report.checks {
        out.push_str(&format!(
            "  [{}] {}: {}\n",
            if c.passed { "ok" } else { "no" },
            cell(&c.id),
            cell(&c.evidence)
        ));
        if !c.passed {
            out.push_str(&format!("       → {}\n", cell(&c.remedy)));
        }
    }
    out.trim_end().to_owned()
}

pub(super) fn usage(u: &json::UsageReport) -> String {
    let Some(target) = &u.target_database else {
        return format!(
            "{}: names no target database, so its database is not observed\n  {}",
            cell(&u.key),
            cell(&u.check.evidence)
        );
    };
    let mut out = format!(
        "{}: database {} · old shape {}\n",
        cell(&u.key),
        cell(target),
        cell(&u.old_shape.join(", "))
    );
    match (&u.failing, u.covered_since_ms) {
        (Some(f), _) => out.push_str(&format!(
            "  cannot observe since {}: {}\n",
            time(Some(f.since_ms)),
            cell(&f.reason)
        )),
        (None, Some(since)) => out.push_str(&format!(
            "  observed without a gap since {} ({}); last pass {}, {} ms over {} statement(s)\n",
            time(Some(since)),
            cell(u.coverage_reason.as_deref().unwrap_or("")),
            time(u.last_pass_ms),
            u.last_pass_duration_ms.unwrap_or(0),
            u.statements_on_target.unwrap_or(0)
        )),
        (None, None) => out.push_str("  not observed yet\n"),
    }
    out.push_str(&format!(
        "  [{}] {}: {}\n",
        if u.check.passed { "ok" } else { "no" },
        cell(&u.check.id),
        cell(&u.check.evidence)
    ));
    if !u.check.passed {
        out.push_str(&format!("       → {}\n", cell(&u.check.remedy)));
    }
    if u.statements.is_empty() {
        // Only evidence is worth a "none": an unobserved target says nothing either way.
        if u.failing.is_none() && u.covered_since_ms.is_some() {
            out.push_str(&format!(
                "  no statement touched the old shape since {}\n",
                time(Some(u.since_ms.max(u.covered_since_ms.unwrap_or(0))))
            ));
        } else {
            out.push_str("  no evidence: the target has not been read\n");
        }
    }
    for st in &u.statements {
        let objects: Vec<String> = st
            .objects
            .iter()
            .map(|o| match &o.possible {
                None => o.object.clone(),
                Some(why) => format!("possibly {} ({why})", o.object),
            })
            .collect();
        out.push_str(&format!(
            "\n  {:<10} {}\n             {} call(s), {} row(s), {} in the gate's window; first {}, last {}\n             role {} · {}\n",
            st.verdict.to_uppercase(),
            cell(&st.statement.split_whitespace().collect::<Vec<_>>().join(" ")),
            st.calls,
            st.rows,
            st.calls_in_window,
            time(Some(st.first_seen_ms)),
            time(Some(st.last_seen_ms)),
            cell(&st.role),
            cell(&objects.join("; "))
        ));
        if st.sessions.is_empty() {
            out.push_str("             no session seen running it\n");
        }
        for session in &st.sessions {
            out.push_str(&format!(
                "             seen: {} (role {}{})\n",
                cell(if session.application_name.is_empty() {
                    "no application_name"
                } else {
                    &session.application_name
                }),
                cell(&session.role),
                if session.client_addr.is_empty() {
                    String::new()
                } else {
                    format!(", from {}", cell(&session.client_addr))
                }
            ));
        }
    }
    out.trim_end().to_owned()
}

pub(super) fn lifecycle(v: &json::Lifecycle) -> String {
    if v.contracted_in_use.is_empty() && v.complete_not_contracted.is_empty() {
        return format!(
            "nothing stale: no contracted migration is still evaluated, and none has been at \
             complete 100% for over {}d",
            v.complete_for_days
        );
    }
    let mut out = String::new();
    for m in &v.contracted_in_use {
        let instances: Vec<String> = m
            .instances
            .iter()
            .map(|i| format!("{}/{}", cell(&i.service), cell(&i.instance_id)))
            .collect();
        out.push_str(&format!(
            "{}: contracted, still evaluated by {} (remove the flag from that code)\n",
            cell(&m.key),
            instances.join(", ")
        ));
    }
    for m in &v.complete_not_contracted {
        out.push_str(&format!(
            "{}: complete at 100% since {}, not contracted (run the gate and the contract migration)\n",
            cell(&m.key),
            time(Some(m.complete_since_ms))
        ));
    }
    out.trim_end().to_owned()
}

pub(super) fn progress(p: &json::BackfillProgress) -> String {
    let (done, total) = (p.rows_done, p.rows_total_estimate);
    // An estimate of 0 means unknown: no bar.
    let bar = match (done.min(total) * 30).checked_div(total) {
        Some(filled) => format!(
            "[{}{}] {:>3}% ",
            "#".repeat(filled as usize),
            ".".repeat(30 - filled as usize),
            done.min(total) * 100 / total
        ),
        None => String::new(),
    };
    // While paused, the last rate and ETA describe the time before the pause.
    let pace = if p.paused {
        String::new()
    } else {
        let eta = p
            .eta_seconds
            .map(|s| {
                format!(
                    ", ETA {}",
                    switchyard_domain::time::format_duration(Duration::from_secs(s))
                )
            })
            .unwrap_or_default();
        format!(", {:.0} rows/s{eta}", p.rate_rows_per_second)
    };
    format!(
        "{}: backfill {}{} {bar}{done} of ~{total} rows{pace}{}",
        cell(&p.key),
        p.status.as_str(),
        if p.paused { " (paused)" } else { "" },
        if p.runner.is_empty() {
            String::new()
        } else {
            format!(", runner {}", cell(&p.runner))
        },
    ) + &throttle(p)
}

/// Why the runner holds, and for how long it has held in all.
fn throttle(p: &json::BackfillProgress) -> String {
    let t = &p.throttle;
    let total =
        switchyard_domain::time::format_duration(Duration::from_secs(t.throttled_seconds as u64));
    if t.throttled {
        format!(", throttled: {} (held {total} in all)", cell(&t.reason))
    } else if t.throttled_seconds >= 1.0 {
        format!(", held {total} in all for the database's health")
    } else {
        String::new()
    }
}

/// The settings set on the server, or that there are none.
pub(super) fn backfill_settings(s: &json::BackfillSettings) -> String {
    fn off_or<T: PartialEq + Default + std::fmt::Display>(v: T, unit: &str) -> String {
        if v == T::default() {
            "off".to_owned()
        } else {
            format!("{v}{unit}")
        }
    }
    let mut parts = Vec::new();
    if let Some(v) = s.batch_size {
        parts.push(format!("batch size {v}"));
    }
    if let Some(v) = s.max_rows_per_second {
        parts.push(format!("max rows/s {}", off_or(v, "")));
    }
    if let Some(v) = s.max_replica_lag_ms {
        parts.push(format!("max replica lag {}", off_or(v, " ms")));
    }
    if let Some(v) = s.max_replica_lag_bytes {
        parts.push(format!("max replica lag {}", off_or(v, " bytes")));
    }
    if let Some(v) = s.max_wal_bytes_per_second {
        parts.push(format!("max WAL {}", off_or(v, " bytes/s")));
    }
    if let Some(v) = s.batch_target_ms {
        parts.push(format!("batch target {}", off_or(v, " ms")));
    }
    if let Some(v) = s.yield_to_blocked_sessions {
        parts.push(format!(
            "yield to blocked sessions {}",
            if v { "on" } else { "off" }
        ));
    }
    if let Some(v) = s.hold_during_autovacuum {
        parts.push(format!(
            "hold during autovacuum {}",
            if v { "on" } else { "off" }
        ));
    }
    if parts.is_empty() {
        "settings: none set (the runner's own)".to_owned()
    } else {
        format!("settings: {}", parts.join(", "))
    }
}

pub(super) fn decision(d: &json::Decision, entity: Option<&str>) -> String {
    format!(
        "{} for {}: stage {}, write {}, read {}, return {}{}",
        cell(&d.key),
        entity.map_or("an operation without entity".to_owned(), |e| {
            let bucket = d.bucket.map_or("null".to_owned(), |b| b.to_string());
            format!("entity {} (bucket {bucket})", cell(e))
        }),
        d.stage,
        d.write.as_str(),
        d.read.as_str(),
        d.return_value.as_str(),
        if d.shadow_compare {
            ", compare shadow reads"
        } else {
            ""
        },
    )
}

pub(super) fn instances(list: &json::Instances) -> String {
    // A migration's list (every instance carries `uses_migration`) says which name it.
    let per_migration = list.instances.iter().any(|i| i.uses_migration.is_some());
    let mut out = format!(
        "{:<24} {:<40} {:>8} {:<5} {}LAST SEEN\n",
        "SERVICE",
        "INSTANCE",
        "APPLIED",
        "LIVE",
        if per_migration { "USES  " } else { "" }
    );
    for i in &list.instances {
        let uses = match i.uses_migration {
            Some(true) => "yes   ",
            Some(false) => "no    ",
            None => "",
        };
        // Numbers go unpadded under their header, as the CLI has always printed them.
        out.push_str(&format!(
            "{:<24} {:<40} {} {:<5} {uses}{}\n",
            cell(&i.service),
            cell(&i.instance_id),
            i.applied_version,
            if i.live { "yes" } else { "no" },
            time(Some(i.last_seen_ms)),
        ));
    }
    if per_migration {
        out.push_str(
            "(rules 3 and 5 wait for every live instance to apply a change, whether or not it \
             uses the migration yet)\n",
        );
    }
    out.trim_end().to_owned()
}

pub(super) fn created_token(t: &json::CreatedToken) -> String {
    format!(
        "created token {} ({}) with role {} on {}; it is shown only now:\n{}",
        t.info.id,
        cell(&t.info.name),
        t.info.role.as_str(),
        scope(&t.info.scope),
        cell(&t.token)
    )
}

/// A token's scope as the CLI prints it.
fn scope(patterns: &[String]) -> String {
    if patterns.is_empty() {
        "every migration".to_owned()
    } else {
        cell(&patterns.join(",")).into_owned()
    }
}

pub(super) fn tokens(list: &json::Tokens) -> String {
    let mut out = format!(
        "{:>4} {:<24} {:<9} {:<22} {:<22} SCOPE\n",
        "ID", "NAME", "ROLE", "CREATED", "REVOKED"
    );
    for t in &list.tokens {
        // The id unpadded under its header, as the CLI has always printed it.
        out.push_str(&format!(
            "{} {:<24} {:<9} {:<22} {:<22} {}\n",
            t.id,
            cell(&t.name),
            t.role.as_str(),
            time(Some(t.created_at_ms)),
            t.revoked_at_ms.map_or("-".to_owned(), |ms| time(Some(ms))),
            scope(&t.scope),
        ));
    }
    out.trim_end().to_owned()
}

pub(super) fn revoked_token(t: &json::Token) -> String {
    format!("revoked token {} ({})", t.id, cell(&t.name))
}

pub(super) fn mismatches(m: &json::Mismatches) -> String {
    if m.samples.is_empty() {
        return format!("no mismatch sampled for {}", cell(&m.key));
    }
    let mut out = format!(
        "{} entities sampled for {} (showing {}, most recent first)\n{:<24} {:>6} {:<20} {:<24} DIFFERENCE\n",
        m.entities,
        cell(&m.key),
        m.samples.len(),
        "ENTITY",
        "SEEN",
        "LAST SEEN",
        "BY",
    );
    for s in &m.samples {
        let description = if s.description.is_empty() {
            "(no description)"
        } else {
            &s.description
        };
        out.push_str(&format!(
            "{:<24} {:>6} {:<20} {:<24} {}\n",
            cell(&s.entity_key),
            s.seen,
            time(Some(s.last_seen_ms)),
            cell(&format!("{}/{}", s.service, s.instance_id)),
            cell(description),
        ));
    }
    out.pop();
    out
}

/// One entity key per line, nothing else: for `xargs` or a repair script.
pub(super) fn mismatch_keys(m: &json::Mismatches) -> String {
    m.samples
        .iter()
        .map(|s| s.entity_key.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A plan: its status, its stages and steps, and what it does next.
pub(super) fn plan(p: &json::PlanView, verb: &str) -> String {
    let mut out = if verb.is_empty() {
        format!("plan of {}: {} ({})", p.key, p.status, p.status_reason)
    } else {
        format!(
            "plan of {} {verb}: now {} ({})",
            p.key, p.status, p.status_reason
        )
    };
    if let Some(template) = &p.template {
        out.push_str(&format!("\n  from template    {template}"));
    }
    if let Some(window) = &p.window {
        out.push_str(&format!("\n  window           {window}"));
    }
    if let Some(at) = p.not_before_ms {
        out.push_str(&format!(
            "\n  starts           {}",
            switchyard_domain::time::format_minute(at)
        ));
    }
    out.push_str(&plan_stages(&p.stages));
    out.push_str(&format!(
        "\n  guardrails       {}",
        guardrails(&p.guardrails)
    ));
    out.push_str(&format!(
        "\n  next             {}: {}",
        p.next.kind, p.next.description
    ));
    if !p.waiting.is_empty() && p.waiting != p.next.description {
        out.push_str(&format!("\n  waiting          {}", p.waiting));
    }
    out
}

/// The thresholds in effect, on one line: `mismatches ≤ 0%, new-shape errors ≤ 1% and ≤ 2× the
/// old's, …; on breach halt`.
fn guardrails(g: &json::GuardrailsBody) -> String {
    // Rounded so 0.07 reads 7%, not 7.000000000000001%.
    let pct = |r: Option<f64>| format!("{}%", (r.unwrap_or_default() * 100_000.0).round() / 1000.0);
    let times = |r: Option<f64>| format!("{}×", r.unwrap_or_default());
    let secs = |s: Option<u64>| {
        switchyard_domain::time::format_span(
            s.unwrap_or_default().min(i64::MAX as u64 / 1000) as i64 * 1000,
        )
    };
    format!(
        "mismatches ≤ {}, new-shape errors ≤ {} and ≤ {} the old's, p99 ≤ {} the old's \
         (from {} operations, {} comparisons), instances behind ≤ {}, backfill stalled or held \
         ≤ {}, database unobserved ≤ {}; on breach {}",
        pct(g.max_mismatch_ratio),
        pct(g.max_new_error_ratio),
        times(g.max_error_ratio_vs_old),
        times(g.max_p99_ratio_vs_old),
        g.min_operations.unwrap_or_default(),
        g.min_comparisons.unwrap_or_default(),
        secs(g.max_behind_seconds),
        secs(g.max_backfill_stall_seconds),
        secs(g.max_unobserved_seconds),
        g.on_breach.as_deref().unwrap_or("halt")
    )
}

/// An approval request: what it would change, who asked, where it stands, and what to do.
pub(super) fn approval(a: &json::Approval) -> String {
    let mut out = format!(
        "approval {} for {}: {} ({})\n  change           {} at version {}\n  requested by     {} at {}: {}",
        a.id,
        a.key,
        a.status,
        a.gated,
        a.change,
        a.expected_version,
        a.requested_by,
        switchyard_domain::time::format_minute(a.requested_at_ms),
        a.reason
    );
    if a.status == "pending" {
        out.push_str(&format!(
            "\n  next             another operator runs `switchyard approvals approve {} --reason …` \
             (or reject it)",
            a.id
        ));
    } else {
        out.push_str(&format!(
            "\n  decided by       {}{}: {}",
            a.decided_by,
            a.decided_at_ms
                .map(|at| format!(" at {}", switchyard_domain::time::format_minute(at)))
                .unwrap_or_default(),
            a.decision_reason
        ));
    }
    if let Some(m) = &a.migration {
        out.push_str(&format!(
            "\n  now              {} {} (version {})",
            m.record.stage,
            switchyard_domain::BasisPoints::new(m.record.rollout_bp).map_or_else(
                |_| format!("{} bp", m.record.rollout_bp),
                |bp| bp.to_string()
            ),
            m.record.version
        ));
    }
    out
}

/// A webhook subscription on one line and its filters below.
pub(super) fn webhook(w: &json::Webhook) -> String {
    format!(
        "{:>4}  {} ({})\n      events {} · migrations {} · by {}",
        w.id,
        w.url,
        w.format,
        w.events.join(","),
        if w.migrations.is_empty() {
            "all".to_owned()
        } else {
            w.migrations.join(",")
        },
        w.created_by
    )
}

/// A subscription's delivery log.
pub(super) fn deliveries(log: &json::WebhookDeliveries) -> String {
    let mut out = webhook(&log.webhook);
    if log.deliveries.is_empty() {
        out.push_str("\n  no deliveries yet");
    }
    for d in &log.deliveries {
        let detail = match d.status.as_str() {
            "delivered" => format!(
                "delivered {} (HTTP {}) after {} attempt(s)",
                d.delivered_at_ms
                    .map(switchyard_domain::time::format_minute)
                    .unwrap_or_default(),
                d.last_status,
                d.attempts
            ),
            "pending" if d.attempts == 0 => "pending".to_owned(),
            "pending" => format!(
                "retrying at {} after {} attempt(s): {}",
                switchyard_domain::time::format_minute(d.next_attempt_ms),
                d.attempts,
                d.last_error
            ),
            _ => format!("failed after {} attempt(s): {}", d.attempts, d.last_error),
        };
        out.push_str(&format!(
            "\n  {:>6}  {:<16} {:<28} {detail}",
            d.id, d.event, d.key
        ));
    }
    out
}

/// Approval requests, one line each (newest first).
pub(super) fn approvals(list: &json::Approvals) -> String {
    if list.approvals.is_empty() {
        return "no approval requests".to_owned();
    }
    list.approvals
        .iter()
        .map(|a| {
            format!(
                "{:>5}  {:<9} {:<28} {}  by {}",
                a.id, a.status, a.key, a.change, a.requested_by
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A template: its name, description, window and stages.
pub(super) fn template(t: &json::PlanTemplate) -> String {
    let mut out = format!("{} (set by {})", t.name, t.updated_by);
    if !t.description.is_empty() {
        out.push_str(&format!("\n  {}", t.description));
    }
    if let Some(window) = &t.window {
        out.push_str(&format!("\n  window           {window}"));
    }
    out.push_str(&plan_stages(&t.stages));
    out
}

/// One line per stage: its steps with their holds, then what follows.
fn plan_stages(stages: &[json::PlanStage]) -> String {
    let mut out = String::new();
    for s in stages {
        let steps: Vec<String> = s
            .steps
            .iter()
            .map(|st| {
                let pct = switchyard_domain::BasisPoints::new(st.rollout_bp)
                    .map_or_else(|_| format!("{} bp", st.rollout_bp), |bp| bp.to_string());
                if st.hold_seconds > 0 {
                    format!(
                        "{pct} (hold {})",
                        switchyard_domain::time::format_span(st.hold_seconds as i64 * 1000)
                    )
                } else {
                    pct
                }
            })
            .collect();
        out.push_str(&format!(
            "\n  {:<16} {}, then {}",
            s.stage,
            steps.join(" → "),
            s.then
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_why_the_runner_holds_and_settings_read_as_set() {
        let p = json::BackfillProgress {
            key: "users.x".into(),
            status: json::BackfillStatus::Running,
            paused: false,
            cursor: "keyset:10".into(),
            rows_done: 10,
            rows_total_estimate: 100,
            rate_rows_per_second: 5.0,
            eta_seconds: Some(18),
            runner: "api/1".into(),
            updated_at_ms: Some(1),
            throttle: json::BackfillThrottle {
                throttled: true,
                reason: "replica 127.0.0.1:5433 replay lag 3.2 s > 1 s".into(),
                since_ms: Some(1),
                throttled_seconds: 95.0,
            },
            settings: json::BackfillSettings {
                batch_size: Some(500),
                max_replica_lag_ms: Some(0),
                ..Default::default()
            },
            settings_changed: None,
        };
        let line = progress(&p);
        assert!(
            line.ends_with(
                ", throttled: replica 127.0.0.1:5433 replay lag 3.2 s > 1 s (held 1m 35s in all)"
            ),
            "{line}"
        );
        assert_eq!(
            backfill_settings(&p.settings),
            "settings: batch size 500, max replica lag off"
        );
        assert_eq!(
            backfill_settings(&json::BackfillSettings::default()),
            "settings: none set (the runner's own)"
        );
    }
}
