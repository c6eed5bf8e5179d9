//! The documentation's commands, run as written, so the docs cannot drift
//! from the binary; and the deploy files (deploy/), checked as far as a
//! machine with no Docker engine can.
//!
//! **Marking a block runnable.** In README.md and docs/*.md, a fenced block
//! whose info string is `sh` runs when the line right before its fence is
//! `<!-- runnable -->` (invisible once rendered). Every marked block runs,
//! in file order, against one `crier serve --dev` started here on a free
//! loopback port, each block in a fresh empty working directory. Only mark
//! commands that end by themselves (no `crier subscribe`, no `curl -N`
//! stream) and need nothing but `--dev` (no config file of the docs, no
//! second terminal).
//!
//! **Rewriting.** Before a command runs: `cargo run --release --` becomes
//! `crier`; `localhost:8000` and `127.0.0.1:8000` name the test server's
//! port; `crier` is the binary Cargo built (a wrapper first on `PATH`,
//! which also gives `crier publish` and `crier subscribe` the test server's
//! `--url` unless the command names one). Lines ending in `\` continue.
//!
//! **Expected output.** The `# ...` comment lines right after a command
//! are its standard output, line by line; so is an inline comment after
//! the command that starts with `{` or `[` (`curl ... # {}`). Other inline
//! comments are prose. Each command must exit 0 within 30 s.
//!
//! **The comparison rule.** An expected line that starts with `{` or `[`
//! is JSON (prose after the JSON value is ignored, and `{...}` stands for
//! any value): the output line must be JSON of the same shape. Objects:
//! every key shown must be there with a matching value (keys the docs leave
//! out are allowed). Arrays: the same length, element by element. `"..."`
//! matches anything. Numbers match any number (offsets, counts, times
//! differ from run to run) except under `code`, which must be equal.
//! Strings must be equal, except under `epoch`, `uid`, `name`, `client`,
//! `id` and `version`, which only need to be strings. Booleans and null
//! must be equal. Any other expected line must be a prefix of the output
//! line (after trimming both).
//!
//! The test fails listing every drifted block with its file and line, the
//! command as run, and what it printed.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The marker line before a runnable block's fence.
const MARKER: &str = "<!-- runnable -->";

/// How long the server may take to say where it listens.
const DEADLINE: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One command of a block, with the output the docs show for it.
#[derive(Debug)]
struct DocCommand {
    /// 1-based line in the file.
    line: usize,
    /// As written (continuation lines joined).
    text: String,
    /// Expected standard output lines.
    expected: Vec<String>,
}

#[derive(Debug)]
struct Block {
    file: String,
    /// 1-based line of the fence.
    line: usize,
    commands: Vec<DocCommand>,
}

/// Where an inline comment starts: the first `#` outside quotes that
/// follows whitespace.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return Some(i),
            _ => {}
        }
        previous = c;
    }
    None
}

/// The runnable blocks of one file; a marker not followed by a `sh` fence
/// is an error.
fn runnable_blocks(file: &str, text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != MARKER {
            i += 1;
            continue;
        }
        let fence = i + 1;
        if lines.get(fence).map(|l| l.trim()) != Some("```sh") {
            return Err(format!(
                "{file}:{}: {MARKER} must be right before a ```sh fence",
                i + 1
            ));
        }
        let mut block = Block {
            file: file.to_string(),
            line: fence + 1,
            commands: Vec::new(),
        };
        let mut j = fence + 1;
        let mut pending: Option<(usize, String)> = None;
        loop {
            let Some(raw) = lines.get(j) else {
                return Err(format!("{file}:{}: unterminated block", fence + 1));
            };
            if raw.trim() == "```" {
                break;
            }
            let line = raw.trim();
            if let Some((start, mut joined)) = pending.take() {
                joined.push('\n');
                joined.push_str(raw);
                if line.ends_with('\\') {
                    pending = Some((start, joined));
                } else {
                    push_command(&mut block, start, joined);
                }
            } else if line.is_empty() {
            } else if let Some(comment) = line.strip_prefix('#') {
                if let Some(last) = block.commands.last_mut() {
                    last.expected.push(comment.trim().to_string());
                }
            } else if line.ends_with('\\') {
                pending = Some((j + 1, raw.to_string()));
            } else {
                push_command(&mut block, j + 1, raw.to_string());
            }
            j += 1;
        }
        blocks.push(block);
        i = j + 1;
    }
    Ok(blocks)
}

fn push_command(block: &mut Block, line: usize, text: String) {
    let last_line = text.lines().last().unwrap_or_default();
    let mut expected = Vec::new();
    if let Some(at) = comment_start(last_line) {
        let comment = last_line[at + 1..].trim();
        if comment.starts_with('{') || comment.starts_with('[') {
            expected.push(comment.to_string());
        }
    }
    block.commands.push(DocCommand { line, text, expected });
}

/// The command as the test runs it.
fn rewrite(command: &str, port: u16) -> String {
    command
        .replace("cargo run --release --", "crier")
        .replace("localhost:8000", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
}

/// The JSON value an expected line shows, if it shows one.
fn expected_json(expected: &str) -> Option<Result<Value, String>> {
    if !(expected.starts_with('{') || expected.starts_with('[')) {
        return None;
    }
    let text = expected.replace("{...}", "\"...\"");
    let first = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .next();
    Some(match first {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(format!("the docs' expected output is not JSON ({e}): {expected}")),
        None => Err(format!("empty expected output: {expected}")),
    })
}

/// Keys whose string values differ from run to run.
const VOLATILE: &[&str] = &["epoch", "uid", "name", "client", "id", "version"];

/// The comparison rule of this file's header.
fn same_shape(expected: &Value, actual: &Value, key: &str, path: &str) -> Result<(), String> {
    let differ = || format!("at {path}: expected {expected}, got {actual}");
    match expected {
        Value::String(s) if s == "..." => Ok(()),
        Value::Object(fields) => {
            let Value::Object(got) = actual else {
                return Err(differ());
            };
            for (k, v) in fields {
                let Some(a) = got.get(k) else {
                    return Err(format!("at {path}: no key {k:?} in {actual}"));
                };
                same_shape(v, a, k, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            let Value::Array(got) = actual else {
                return Err(differ());
            };
            if items.len() != got.len() {
                return Err(differ());
            }
            for (n, (e, a)) in items.iter().zip(got).enumerate() {
                same_shape(e, a, key, &format!("{path}[{n}]"))?;
            }
            Ok(())
        }
        Value::Number(_) if key != "code" => actual.is_number().then_some(()).ok_or_else(differ),
        Value::String(_) if VOLATILE.contains(&key) => actual.is_string().then_some(()).ok_or_else(differ),
        _ => (expected == actual).then_some(()).ok_or_else(differ),
    }
}

/// Checks `stdout` against the expected lines.
fn compare(expected: &[String], stdout: &str) -> Result<(), String> {
    let lines: Vec<&str> = stdout.lines().collect();
    for (n, want) in expected.iter().enumerate() {
        let Some(got) = lines.get(n) else {
            return Err(format!(
                "expected line {} ({want}), but the output has {}",
                n + 1,
                lines.len()
            ));
        };
        match expected_json(want) {
            Some(json) => {
                let json = json?;
                let actual: Value = serde_json::from_str(got.trim())
                    .map_err(|e| format!("line {}: not JSON ({e}): {got}", n + 1))?;
                same_shape(&json, &actual, "", "$")?;
            }
            None => {
                if !got.trim().starts_with(want.trim()) {
                    return Err(format!(
                        "line {}: expected it to start with {want:?}, got {got:?}",
                        n + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `crier serve --dev` on a free loopback port; killed on drop.
struct DevServer {
    child: Child,
    port: u16,
}

impl DevServer {
    fn start() -> DevServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crier"));
        clean_env(&mut command);
        let mut child = command
            .args(["serve", "--dev", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crier serve --dev");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        // Drained so the server never blocks on a full pipe.
        let mut stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        });
        let mut server = DevServer { child, port: 0 };
        let first = rx
            .recv_timeout(DEADLINE)
            .expect("crier serve --dev printed no listening line in time");
        let address = first
            .strip_prefix("crier listening on http://127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        server.port = address.parse().expect("a port");
        // Keep reading stdout so its pipe never fills either.
        std::thread::spawn(move || for _ in rx {});
        server
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        // Only the child this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No `CRIER_*` or `RUST_LOG` from the shell running the tests.
fn clean_env(command: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("CRIER_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
}

/// A directory with a `crier` that runs the built binary against `port`.
fn wrapper_dir(port: u16, root: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let real = env!("CARGO_BIN_EXE_crier");
    let script = format!(
        r#"#!/usr/bin/env bash
real='{real}'
case " $* " in *" --url "*|*" --url="*) exec "$real" "$@" ;; esac
case "$1" in
  publish) shift; exec "$real" publish --url http://127.0.0.1:{port} "$@" ;;
  subscribe) shift; exec "$real" subscribe --url ws://127.0.0.1:{port}/connection/websocket "$@" ;;
  *) exec "$real" "$@" ;;
esac
"#
    );
    let path = bin.join("crier");
    std::fs::write(&path, script).expect("write the wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

fn documented_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn documented_commands_work_as_written() {
    let root = repo_root();
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    for path in documented_files() {
        let name = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        let text = std::fs::read_to_string(&path).expect("read a doc");
        match runnable_blocks(&name, &text) {
            Ok(found) => blocks.extend(found),
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The markers themselves must not get lost.
    let in_file = |f: &str| blocks.iter().filter(|b| b.file == f).count();
    assert!(in_file("README.md") >= 2, "README.md lost its runnable blocks");
    assert!(
        in_file("docs/api.md") >= 8,
        "docs/api.md lost its runnable blocks"
    );

    let server = DevServer::start();
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let bin = wrapper_dir(server.port, &scratch);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut drifted = Vec::new();
    let mut ran = 0;
    for (n, block) in blocks.iter().enumerate() {
        let cwd = scratch.join(format!("block-{n}"));
        std::fs::create_dir_all(&cwd).expect("block dir");
        for command in &block.commands {
            let script = rewrite(&command.text, server.port);
            let mut bash = Command::new("timeout");
            clean_env(&mut bash);
            let output = bash
                .args(["30", "bash", "-c", &script])
                .current_dir(&cwd)
                .env("PATH", &path)
                .stdin(Stdio::null())
                .output()
                .expect("run bash");
            ran += 1;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let verdict = if output.status.success() {
                compare(&command.expected, &stdout)
            } else {
                Err(format!("exited with {}", output.status))
            };
            if let Err(why) = verdict {
                drifted.push(format!(
                    "{}:{} (block at line {}): {why}\n  ran: {script}\n  stdout: {}\n  stderr: {}",
                    block.file,
                    command.line,
                    block.line,
                    stdout.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        drifted.is_empty(),
        "{} of {ran} documented commands drifted:\n\n{}",
        drifted.len(),
        drifted.join("\n\n")
    );
}

#[test]
fn the_comparison_rule_tolerates_what_varies_and_nothing_else() {
    let want = vec![r#"{"result":{"offset":1,"epoch":"3f2a9c1b"}}   (prose)"#.to_string()];
    assert!(compare(&want, r#"{"result":{"offset":7,"epoch":"0badcafe"}}"#).is_ok());
    assert!(
        compare(&want, r#"{"result":{"offset":7}}"#).is_err(),
        "a key the docs show is missing"
    );
    assert!(compare(&want, r#"{"error":{"code":108,"message":"not available"}}"#).is_err());
    let code = vec![r#"{"error":{"code":102}}"#.to_string()];
    assert!(
        compare(&code, r#"{"error":{"code":108}}"#).is_err(),
        "codes must be equal"
    );
    let any = vec![r#"{"replies":[{"publish":{...}},{"info":{...}}]}"#.to_string()];
    assert!(compare(
        &any,
        r#"{"replies":[{"publish":{"offset":2}},{"info":{"nodes":[]}}]}"#
    )
    .is_ok());
    assert!(
        compare(&any, r#"{"replies":[{"publish":{"offset":2}}]}"#).is_err(),
        "array length"
    );
    let text = vec!["crier.toml: OK".to_string()];
    assert!(compare(&text, "crier.toml: OK\nlisten: 127.0.0.1:8000").is_ok());
    assert!(compare(&text, "crier.toml:3: bad").is_err());
    assert!(compare(&text, "").is_err());
}

#[test]
fn markers_parse_commands_and_their_outputs() {
    let doc = "<!-- runnable -->\n```sh\ncurl -s x -d '{\"a\":\"# not a comment\"}'\n# {\"result\":{}}\ncurl -s y \\\n     -d z      # {}\necho hi        # prose, not output\n```\n";
    let blocks = runnable_blocks("t.md", doc).expect("parses");
    assert_eq!(blocks.len(), 1);
    let c = &blocks[0].commands;
    assert_eq!(c.len(), 3);
    assert_eq!(c[0].expected, [r#"{"result":{}}"#]);
    assert_eq!(c[1].line, 5);
    assert!(c[1].text.contains("-d z"));
    assert_eq!(c[1].expected, ["{}"]);
    assert!(c[2].expected.is_empty());
    assert!(runnable_blocks("t.md", "<!-- runnable -->\n```toml\n```\n").is_err());
    assert_eq!(
        rewrite(
            "cargo run --release -- publish news 1 && curl localhost:8000/x",
            41234
        ),
        "crier publish news 1 && curl 127.0.0.1:41234/x"
    );
}

// ---- deploy/: checked without Docker or a running systemd ----

#[test]
fn dockerfile_copies_what_exists_and_runs_crier_serve_unprivileged() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages = instructions.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a multi-stage build");
    let binary = Path::new(env!("CARGO_BIN_EXE_crier"))
        .file_name()
        .and_then(|n| n.to_str())
        .expect("binary name")
        .to_string();
    for copy in instructions.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
        let (sources, _destination) = words.split_at(words.len() - 1);
        if sources.iter().any(|w| w.starts_with("--from=")) {
            let built = sources.last().expect("a source");
            assert!(
                built.ends_with(&format!("target/release/{binary}")),
                "{copy}: the builder's binary is {binary}"
            );
            continue;
        }
        for source in sources {
            assert!(root.join(source).exists(), "{copy}: {source} does not exist");
        }
    }
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("RUN cargo build") && l.contains(&format!("--bin {binary}"))),
        "the builder builds {binary}"
    );
    let user = instructions
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "non-root: {user}"
    );
    let entrypoint = instructions
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec form");
    assert_eq!(entrypoint, [binary.as_str(), "serve"]);
    assert!(
        instructions.iter().any(|l| l.starts_with("VOLUME ")),
        "a config volume"
    );
}

#[test]
fn systemd_unit_is_valid_and_unprivileged() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("deploy/crier.service")).expect("deploy/crier.service");
    let setting = |key: &str| -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(text.lines().any(|l| l.trim() == section), "{section}");
    }
    assert!(setting("ExecStart")[0].contains("crier serve"));
    assert!(
        setting("ExecReload")[0].contains("-HUP $MAINPID"),
        "reload is SIGHUP"
    );
    assert_eq!(setting("Restart"), ["on-failure"]);
    let dynamic = setting("DynamicUser") == ["yes"];
    let user = setting("User");
    assert!(
        dynamic || user.iter().any(|u| *u != "root" && *u != "0"),
        "runs as a non-root user"
    );
    for hardening in ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"] {
        assert!(!setting(hardening).is_empty(), "{hardening}");
    }
    // systemd's own checker, where this machine has it: the unit with its
    // ExecStart pointed at the binary Cargo built.
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not found: structural checks only");
        return;
    };
    if !out.status.success() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("unit dir");
    let unit = dir.join("crier.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/crier", env!("CARGO_BIN_EXE_crier")),
    )
    .expect("write unit");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let mut stderr = String::new();
    let _ = verify.stderr.as_slice().read_to_string(&mut stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(verify.status.success(), "systemd-analyze verify: {stderr}");
}
