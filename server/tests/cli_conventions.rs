//! The command line behaves like the tools people know: help for every command and argument,
//! completions that load in bash and zsh, manual pages that `man` renders, `serve` without the
//! client's connection options, and logs without colour codes off a terminal or as JSON lines.

mod common;

use common::BIN;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use switchyard_server::cli::command;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SWITCHYARD_TOKEN")
        .output()
        .expect("running switchyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every command and subcommand, with its path (`backfill pause`).
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        // clap's generated `help` subcommands are not ours to document.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{prefix} {}", sub.get_name()).trim().to_owned();
            out.push((path.clone(), sub.clone()));
            walk(&path, sub, out);
        }
    }
    let mut root = command();
    root.build();
    let mut out = vec![(String::new(), root.clone())];
    walk("", &root, &mut out);
    out
}

#[test]
fn every_command_and_argument_has_help_of_its_own() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for (path, cmd) in commands() {
        match cmd.get_about().map(|a| a.to_string()) {
            None => missing.push(format!("`{path}` has no about")),
            // A flattened struct's doc comment becomes the about of a command without one.
            Some(about) if about.starts_with("What every") => {
                missing.push(format!("`{path}` borrows its about: {about}"))
            }
            Some(_) => {}
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            seen += 1;
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(format!("`{path}` argument `{id}` has no help"));
            }
        }
    }
    assert!(seen > 100, "only {seen} arguments seen: is the walk right?");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn serve_offers_only_its_own_options_and_refuses_the_clients() {
    let help = run(&["serve", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    assert!(
        help.contains("--database-url") && help.contains("--log-format"),
        "{help}"
    );
    for client_only in ["--server", "--token", "--tls-ca", "--json", "Connection"] {
        assert!(
            !help.contains(client_only),
            "serve --help lists {client_only}:\n{help}"
        );
    }
    // Given anyway (before or after the subcommand): a usage error naming the option.
    for args in [
        &["serve", "--token", "sy_x"][..],
        &["--server", "http://127.0.0.1:1", "serve"],
        &["serve", "--json"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("is for the commands that talk to a Switchyard server"),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
    // The connection options stay global for the client commands, before or after them.
    let lint_help = text(&run(&["lint", "--help"]).stdout);
    assert!(
        lint_help.contains("--json") && !lint_help.contains("--token"),
        "{lint_help}"
    );
    for args in [
        &["--server", "http://127.0.0.1:9", "migration", "list"][..],
        &["migration", "list", "--server", "http://127.0.0.1:9"],
    ] {
        let o = Command::new(BIN)
            .args(args)
            .env("SWITCHYARD_TOKEN", "sy_x")
            .output()
            .unwrap();
        // Parsed, then the server is unreachable: exit 3, not a usage error.
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", text(&o.stderr));
    }
}

/// The generated script, saved to a temporary file for a shell to load.
fn completion_script(shell: &str) -> std::path::PathBuf {
    let o = run(&["completions", shell]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let path = std::env::temp_dir().join(format!(
        "switchyard-completion-{}-{shell}",
        std::process::id()
    ));
    std::fs::write(&path, &o.stdout).unwrap();
    path
}

#[test]
fn bash_completes_commands_and_options_from_the_generated_script() {
    let script = completion_script("bash");
    // What bash does on TAB: sets COMP_WORDS/COMP_CWORD and calls the function with the
    // command, the current word and the previous one.
    let complete = |words: &[&str]| -> Vec<String> {
        let program = format!(
            "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
             COMP_POINT=${{#COMP_LINE}}\n_switchyard switchyard '{}' '{}'\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let o = Command::new("bash")
            .args(["--norc", "-c", &program])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout).lines().map(str::to_owned).collect()
    };
    assert_eq!(complete(&["switchyard", "ra"]), ["ramp"]);
    assert_eq!(complete(&["switchyard", "backfill", "pa"]), ["pause"]);
    assert!(complete(&["switchyard", "ramp", "--per"]).contains(&"--percent".to_owned()));
    let shells = complete(&["switchyard", "completions", ""]);
    assert!(shells.contains(&"zsh".to_owned()), "{shells:?}");
    let _ = std::fs::remove_file(script);
}

#[test]
fn zsh_loads_the_generated_completion() {
    let script = completion_script("zsh");
    let zsh = Command::new("zsh")
        .args([
            "-f",
            "-c",
            &format!(
                "autoload -U compinit && compinit -u -D && source '{}' && print -r -- ${{_comps[switchyard]}}",
                script.display()
            ),
        ])
        .output()
        .unwrap_or_else(|e| panic!("zsh is needed for this test ({e}): scripts/test installs it"));
    assert!(zsh.status.success(), "{}", text(&zsh.stderr));
    assert_eq!(
        text(&zsh.stdout).trim(),
        "_switchyard",
        "{}",
        text(&zsh.stderr)
    );
    let _ = std::fs::remove_file(script);
}

#[test]
fn manual_pages_render_with_man() {
    let dir = std::env::temp_dir().join(format!("switchyard-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = run(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // One page per command, subcommands included.
    for (path, _) in commands() {
        let page = if path.is_empty() {
            "switchyard.1".to_owned()
        } else {
            format!("switchyard-{}.1", path.replace(' ', "-"))
        };
        assert!(dir.join(&page).is_file(), "no page {page}");
    }
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.join("switchyard-ramp.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .unwrap_or_else(|e| panic!("man is needed for this test: {e}"));
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    let page = text(&rendered.stdout);
    assert!(
        page.contains("switchyard-ramp") && page.contains("--percent") && page.contains("--reason"),
        "{page}"
    );
    // Printed to standard output without --out-dir: the main page, naming the commands.
    let main = text(&run(&["man"]).stdout);
    assert!(
        main.contains(".TH switchyard 1") && main.contains("switchyard\\-ramp(1)"),
        "{main}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `serve` with `args`, its standard output a pipe (not a terminal), and returns the
/// lines it printed up to the one `is_last` accepts.
fn serve_lines(args: &[&str], is_last: impl Fn(&str) -> bool) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-logs-{}-{}",
        std::process::id(),
        args.join("_").replace(['-', '/'], "")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("s.db").display()))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let last = is_last(&line);
        lines.push(line);
        if last {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal_and_come_as_json_lines_when_asked() {
    let text_logs = serve_lines(&[], |l| l.starts_with("switchyard serving HTTP on "));
    assert!(
        text_logs.iter().any(|l| l.contains(" INFO ")),
        "{text_logs:?}"
    );
    assert!(
        text_logs.iter().all(|l| !l.contains('\u{1b}')),
        "escape codes in piped logs: {text_logs:?}"
    );

    let json_logs = serve_lines(&["--log-format", "json"], |l| {
        l.contains("switchyard serving")
    });
    assert!(json_logs.len() >= 2, "{json_logs:?}");
    for line in &json_logs {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{line}"
        );
    }
    let serving: serde_json::Value = serde_json::from_str(json_logs.last().unwrap()).unwrap();
    assert_eq!(serving["message"], "switchyard serving");
    assert!(
        serving["http_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
}
