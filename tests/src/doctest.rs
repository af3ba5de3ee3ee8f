//! The doc-test harness: finds the runnable command blocks in the project's Markdown,
//! runs them against the real binaries in a sandbox per document, and matches what they
//! print against the output the document shows, by shape rather than byte for byte.
//!
//! It owns the marker syntax, the output matcher and the per-document shell session. It
//! knows nothing about what a command does: a document starts its own hub and spokes
//! (in a visible block, or in a hidden setup comment), exactly as a reader would.
//!
//! # Marking a block
//!
//! A fenced block whose info string is `console runnable` runs (GitHub renders it as an
//! ordinary `console` block). Lines starting `$ ` are commands; a command line that ends
//! with `\` continues on the next line. The lines after a command, up to the next `$ `,
//! are its expected output (stdout and stderr together):
//!
//! ````markdown
//! ```console runnable
//! $ flotilla clusters nope; echo "exit $?"
//! error: cluster "nope" not found
//! exit 1
//! ```
//! ````
//!
//! - `console runnable eventually` retries each command of the block until its output
//!   matches (up to [`crate::TIMEOUT`]): for reads that wait on the hub (a poll, a
//!   rollout). Only mark blocks whose commands are safe to repeat.
//! - `<!-- runnable` ... `-->` is a hidden block with the same syntax, for a setup the
//!   reader is told about in prose but need not see (the cluster `c1` of `cli.md`).
//! - Every command must exit 0; show a failure with `; echo "exit $?"`.
//! - Processes a block leaves in the background must send their output to a file
//!   (`2>hub.log &`): the session's output pipe belongs to the foreground command.
//!
//! # Matching
//!
//! - Runs of blanks after a line's indentation count as one, and trailing blanks and
//!   blank lines at the end are ignored, so table columns may be as wide as the values
//!   make them. Indentation counts (YAML, JSON). Every table row and header line must
//!   still be there, in order.
//! - `...` in a line matches any text within that line (ids, times, digests).
//! - A line that is only `[...]` matches any number of lines, including none.
//!
//! # The sandbox
//!
//! Each document gets a fresh temporary directory as its working directory and `HOME`,
//! holding a copy of `examples/` and a git identity in the environment; `PATH` starts
//! with the freshly built `flotilla`,
//! `flotilla-hub` and `flotilla-spoke`. Before a block runs, `/tmp/` in its commands and
//! its expected output becomes the sandbox, and each `127.0.0.1:PORT` a free loopback
//! port (the same one wherever the document names that port), so documents can run
//! side by side and leave nothing behind. The commands of one
//! document run in one `bash` session, in document order, so `cd`, `export` and
//! variables carry from one block to the next as in a reader's terminal. When the
//! document ends, its whole process group is killed. A document that fails keeps its
//! sandbox (with the logs its background processes wrote) and the report says where.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The info string that marks a fenced block as runnable.
const MARKER: &str = "runnable";
/// The opening of a hidden runnable block.
const HIDDEN_OPEN: &str = "<!-- runnable";
/// A document larger than this is refused rather than parsed.
const MAX_DOC_BYTES: usize = 1 << 20;
/// Output kept per command; the rest is dropped (a runaway command cannot fill memory).
const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// One command of a runnable block and the output the document shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the `$ ` in the document.
    pub line: usize,
    pub command: String,
    pub expected: Vec<String>,
}

/// A runnable block: its steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// 1-based line of the opening fence (or comment).
    pub line: usize,
    /// Retry each command until its output matches (`console runnable eventually`).
    pub eventually: bool,
    pub steps: Vec<Step>,
}

/// Finds the runnable blocks of a Markdown document, in document order.
///
/// A runnable block that shows output before its first command, or that is never
/// closed, is an error naming its line: a marker that silently ran nothing would let
/// the document drift again.
pub fn parse(text: &str) -> Result<Vec<Block>, String> {
    if text.len() > MAX_DOC_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_DOC_BYTES} a document may have",
            text.len()
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let fence = line.len() - line.trim_start_matches('`').len();
        let opening = if fence >= 3 {
            let words: Vec<&str> = line[fence..].split_whitespace().collect();
            // Skip over any fenced block so that a marker shown inside one (as in a
            // contributing guide) is not taken for a real one. A fence closes with at
            // least as many backticks as opened it.
            let close = find_line(&lines, i + 1, |l| {
                let l = l.trim();
                l.len() >= fence && l.chars().all(|c| c == '`')
            });
            if words.contains(&MARKER) {
                Some((close, words.contains(&"eventually"), "```"))
            } else {
                i = close.map_or(lines.len(), |c| c + 1);
                continue;
            }
        } else if let Some(rest) = line.strip_prefix(HIDDEN_OPEN) {
            // `<!-- runnable eventually: why` names its purpose after a colon.
            let eventually = rest
                .split(|c: char| c.is_whitespace() || c == ':')
                .any(|w| w == "eventually");
            let close = find_line(&lines, i + 1, |l| l.trim() == "-->");
            Some((close, eventually, "-->"))
        } else {
            None
        };
        let Some((close, eventually, closer)) = opening else {
            i += 1;
            continue;
        };
        let close = close
            .ok_or_else(|| format!("line {}: runnable block never closed ({closer})", i + 1))?;
        // A block inside a list item is indented like its fence; the transcript is not.
        let indent = lines[i].len() - line.len();
        let body: Vec<&str> = lines[i + 1..close]
            .iter()
            .map(|l| {
                let blanks = l.len() - l.trim_start_matches(' ').len();
                &l[blanks.min(indent)..]
            })
            .collect();
        blocks.push(Block {
            line: i + 1,
            eventually,
            steps: parse_steps(&body, i + 2)?,
        });
        i = close + 1;
    }
    Ok(blocks)
}

fn find_line(lines: &[&str], from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
    (from..lines.len()).find(|&j| pred(lines[j]))
}

/// The steps of a block's body; `first_line` is the document line of `body[0]`.
fn parse_steps(body: &[&str], first_line: usize) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for (k, raw) in body.iter().enumerate() {
        if continued {
            let step = steps.last_mut().ok_or("continuation without a command")?;
            step.command.push('\n');
            step.command.push_str(raw);
            continued = raw.ends_with('\\');
        } else if let Some(cmd) = raw.strip_prefix("$ ") {
            steps.push(Step {
                line: first_line + k,
                command: cmd.to_string(),
                expected: Vec::new(),
            });
            continued = cmd.ends_with('\\');
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(raw.to_string());
        } else if !raw.trim().is_empty() {
            return Err(format!(
                "line {}: output before the first `$ ` command of a runnable block",
                first_line + k
            ));
        }
    }
    if steps.is_empty() {
        return Err(format!(
            "line {}: a runnable block with no `$ ` command",
            first_line.saturating_sub(1)
        ));
    }
    Ok(steps)
}

/// Why an output does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// 1-based line of the expected output where matching stopped, if it got that far.
    pub expected_line: Option<usize>,
    pub detail: String,
}

/// Matches `actual` against the `expected` lines (see the module doc for the rules).
pub fn matches(expected: &[String], actual: &str) -> Result<(), Mismatch> {
    let exp = normalise(expected.iter().map(String::as_str));
    let act = normalise(actual.lines());
    // `reach[i][j]`: expected[..i] can match actual[..j]. Filled forwards so that the
    // furthest expected line that could be reached names the failure.
    let (n, m) = (exp.len(), act.len());
    let mut reach = vec![vec![false; m + 1]; n + 1];
    reach[0][0] = true;
    let mut furthest = 0;
    for i in 0..n {
        let any_lines = exp[i].trim() == "[...]";
        for j in 0..=m {
            if !reach[i][j] {
                continue;
            }
            furthest = furthest.max(i);
            if any_lines {
                for r in reach[i + 1].iter_mut().skip(j) {
                    *r = true;
                }
                break;
            }
            if j < m && line_matches(&exp[i], &act[j]) {
                reach[i + 1][j + 1] = true;
            }
        }
    }
    if reach[n][m] {
        return Ok(());
    }
    if (0..=m).any(|j| reach[n][j]) {
        let extra = (0..=m).filter(|&j| reach[n][j]).max().unwrap_or(0);
        return Err(Mismatch {
            expected_line: None,
            detail: format!(
                "unexpected output after the last expected line: {:?}",
                act.get(extra).map(String::as_str).unwrap_or_default()
            ),
        });
    }
    Err(Mismatch {
        expected_line: Some(furthest + 1),
        detail: format!(
            "no output line matches expected line {}: {:?}",
            furthest + 1,
            exp[furthest]
        ),
    })
}

/// Keeps each line's indentation (it is meaning in YAML and JSON), collapses the blank
/// runs after it (table padding), trims the end and drops trailing blank lines.
fn normalise<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = lines
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.is_empty() {
                String::new()
            } else {
                format!("{indent}{}", words.join(" "))
            }
        })
        .collect();
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// One line against a pattern in which `...` matches any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == line;
    };
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A document's sandbox and the bash session its commands run in.
pub struct Session {
    /// The sandbox; `None` once it is kept for a post-mortem.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Document port -> free port, the same throughout the document.
    ports: std::collections::HashMap<u16, u16>,
    bash: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    commands: usize,
}

/// A step that did not run as the document says, with everything needed to fix it.
#[derive(Debug)]
pub struct Failure {
    pub line: usize,
    pub command: String,
    pub expected: Vec<String>,
    pub actual: String,
    pub why: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {}", self.line, self.why)?;
        writeln!(f, "  command:  $ {}", self.command)?;
        writeln!(f, "  expected:")?;
        for l in &self.expected {
            writeln!(f, "    | {l}")?;
        }
        writeln!(f, "  actual:")?;
        for l in self.actual.lines() {
            writeln!(f, "    | {l}")?;
        }
        Ok(())
    }
}

impl Session {
    /// A fresh sandbox with `examples/` from `repo_root` and the binaries in `bin_dir`
    /// first on `PATH`.
    pub fn start(repo_root: &Path, bin_dir: &Path) -> Result<Session, String> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("flotilla-doctest-")
            .tempdir()
            .map_err(|e| format!("creating the sandbox: {e}"))?;
        crate::copy_dir(&repo_root.join("examples"), &dir.path().join("examples"));
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut bash = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.path())
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("NO_COLOR", "1")
            // A reader's git knows who they are; the sandbox's HOME has no config.
            .env("GIT_AUTHOR_NAME", "flotilla-docs")
            .env("GIT_AUTHOR_EMAIL", "docs@flotilla.invalid")
            .env("GIT_COMMITTER_NAME", "flotilla-docs")
            .env("GIT_COMMITTER_EMAIL", "docs@flotilla.invalid")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so that everything a document starts, in the
            // foreground or with `&`, is stopped with it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting bash: {e}"))?;
        let stdin = bash.stdin.take().ok_or("bash has no stdin")?;
        let stdout = bash.stdout.take().ok_or("bash has no stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            // Split on newlines ourselves: a command may print bytes that are not UTF-8.
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_string();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Session {
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            ports: std::collections::HashMap::new(),
            bash,
            stdin,
            lines,
            commands: 0,
        })
    }

    /// Leaves the sandbox (with the logs of what the document started) in place when
    /// the session ends; returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.root.clone()
    }

    /// Rewrites the document's fixed places into this sandbox's: `/tmp/` and every
    /// `127.0.0.1:PORT`.
    fn localise(&mut self, text: &str) -> String {
        const HOST: &str = "127.0.0.1:";
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(HOST) {
            let after = &rest[at + HOST.len()..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            out.push_str(&rest[..at + HOST.len()]);
            match after[..digits].parse::<u16>() {
                Ok(port) if port != 0 => {
                    let free = *self.ports.entry(port).or_insert_with(crate::free_port);
                    out.push_str(&free.to_string());
                }
                _ => out.push_str(&after[..digits]),
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out.replace("/tmp/", &format!("{}/", self.root.display()))
    }

    /// Runs every step of `block`, stopping at the first that fails.
    pub fn run_block(&mut self, block: &Block) -> Result<(), Failure> {
        for step in &block.steps {
            let command = self.localise(&step.command);
            let expected: Vec<String> = step.expected.iter().map(|l| self.localise(l)).collect();
            let start = Instant::now();
            loop {
                let fail = |actual: String, why: String| Failure {
                    line: step.line,
                    command: command.clone(),
                    expected: expected.clone(),
                    actual,
                    why,
                };
                let (status, actual) = self.run(&command).map_err(|e| fail(String::new(), e))?;
                let outcome = if status != 0 {
                    Err(format!("exit status {status}"))
                } else {
                    matches(&expected, &actual).map_err(|m| m.detail)
                };
                match outcome {
                    Ok(()) => break,
                    Err(why) if !block.eventually || start.elapsed() >= crate::TIMEOUT => {
                        let why = if block.eventually {
                            format!("{why} (still, after retrying for {:?})", crate::TIMEOUT)
                        } else {
                            why
                        };
                        return Err(fail(actual, why));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            }
        }
        Ok(())
    }

    /// Runs one command in the session; returns its exit status and output.
    fn run(&mut self, command: &str) -> Result<(i32, String), String> {
        self.commands += 1;
        // The command goes through a file, with stdin from /dev/null, so that nothing it
        // runs can read the rest of the session's script.
        let script = self.root.join(format!(".doctest-{}.sh", self.commands));
        std::fs::write(&script, format!("{command}\n"))
            .map_err(|e| format!("writing {}: {e}", script.display()))?;
        let mark = format!(
            "__flotilla_doctest_{}_{}__",
            std::process::id(),
            self.commands
        );
        writeln!(
            self.stdin,
            "{{ . '{}'; }} </dev/null 2>&1; printf '%s%d\\n' '{mark}' $?",
            script.display()
        )
        .and_then(|()| self.stdin.flush())
        .map_err(|e| format!("sending the command to bash: {e}"))?;
        let deadline = Instant::now() + crate::TIMEOUT;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    // The session is now out of step; the caller stops the document.
                    return Err(format!(
                        "no end within {:?}; output so far:\n{out}",
                        crate::TIMEOUT
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the shell exited; output so far:\n{out}"));
                }
            };
            let (text, status) = match line.find(&mark) {
                Some(at) => (&line[..at], line[at + mark.len()..].parse::<i32>().ok()),
                None => (line.as_str(), None),
            };
            if out.len() < MAX_OUTPUT_BYTES && !(status.is_some() && text.is_empty()) {
                out.push_str(text);
                out.push('\n');
            }
            if let Some(status) = status {
                return Ok((status, out));
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let group = format!("-{}", self.bash.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
            if signal == "-TERM" {
                // Give the hub and spokes a moment to stop cleanly; KILL follows anyway.
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until && group_alive(&group) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = self.bash.wait();
    }
}

/// Whether any process of the group is still there (`kill -0` succeeds).
fn group_alive(group: &str) -> bool {
    Command::new("kill")
        .args(["-0", "--", group])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs every runnable block of the document at `path` in a fresh session; returns
/// the number of blocks run, or a report naming the document, line, command, expected
/// and actual output.
pub fn run_document(path: &Path, repo_root: &Path, bin_dir: &Path) -> Result<usize, String> {
    let name = path.strip_prefix(repo_root).unwrap_or(path).display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let blocks = parse(&text).map_err(|e| format!("{name}: {e}"))?;
    if blocks.is_empty() {
        return Ok(0);
    }
    let mut session = Session::start(repo_root, bin_dir)?;
    for block in &blocks {
        if let Err(f) = session.run_block(block) {
            let kept = session.keep();
            return Err(format!(
                "{name}:{f}  sandbox kept for a look (logs of what the document started): {}\n",
                kept.display()
            ));
        }
    }
    Ok(blocks.len())
}

/// The Markdown documents the harness looks at: `README.md` and `docs/*.md`.
pub fn documents(repo_root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![repo_root.join("README.md")];
    if let Ok(entries) = std::fs::read_dir(repo_root.join("docs")) {
        let mut md: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        md.sort();
        docs.extend(md);
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn tables_match_whatever_their_column_widths() {
        let expected = lines("NAME   CONNECTED   STATE\nc1     true        Ready");
        assert_eq!(
            matches(
                &expected,
                "NAME CONNECTED STATE\nc1   true      Ready   \n\n"
            ),
            Ok(())
        );
    }

    #[test]
    fn indentation_counts() {
        let expected = lines("spec:\n  replicas: 3");
        assert!(matches(&expected, "spec:\n  replicas:   3").is_ok());
        assert!(matches(&expected, "spec:\nreplicas: 3").is_err());
    }

    #[test]
    fn a_missing_or_extra_table_row_is_a_mismatch() {
        let expected = lines("NAME   STATE\nc1     Ready\nc2     Ready");
        let missing = matches(&expected, "NAME STATE\nc1 Ready\n").expect_err("an error");
        assert_eq!(missing.expected_line, Some(3), "{missing:?}");
        let extra =
            matches(&expected, "NAME STATE\nc1 Ready\nc2 Ready\nc3 Ready").expect_err("an error");
        assert!(extra.detail.contains("c3 Ready"), "{extra:?}");
    }

    #[test]
    fn a_changed_header_is_a_mismatch() {
        let expected = lines("NAME   STATE\nc1     Ready");
        let m = matches(&expected, "NAME READY\nc1 Ready").expect_err("an error");
        assert_eq!(m.expected_line, Some(1));
        assert!(m.detail.contains("NAME STATE"), "{m:?}");
    }

    #[test]
    fn dots_match_any_text_within_one_line() {
        let expected = lines("deployment=d-... state=Ready\n... end");
        assert_eq!(
            matches(&expected, "deployment=d-abc123 state=Ready\n2026 end"),
            Ok(())
        );
        assert!(matches(&expected, "deployment=d-abc state=Ready\nend").is_err());
        assert!(matches(&lines("a...b...c"), "axxbyyc").is_ok());
        assert!(matches(&lines("a...b...c"), "axxcyyb").is_err());
        // A prefix and a suffix that overlap in the line do not both match one text.
        assert!(matches(&lines("ab...ba"), "aba").is_err());
    }

    #[test]
    fn a_bracketed_ellipsis_line_matches_any_number_of_lines() {
        let expected = lines("first\n[...]\nlast");
        assert!(matches(&expected, "first\nlast").is_ok());
        assert!(matches(&expected, "first\na\nb\nc\nlast").is_ok());
        assert!(matches(&expected, "first\na\nb").is_err());
        assert!(matches(&lines("[...]"), "").is_ok());
        assert!(matches(&lines("head\n[...]"), "head\nanything\nelse").is_ok());
    }

    #[test]
    fn output_where_none_is_expected_is_a_mismatch() {
        assert!(matches(&[], "").is_ok());
        assert!(matches(&[], "surprise").is_err());
    }

    #[test]
    fn runnable_blocks_are_found_with_their_lines_commands_and_output() {
        let doc = "# t\n\n```sh\nnot run\n```\n\n```console runnable eventually\n\
                   $ echo a \\\n  b\na b\n$ true\n```\n<!-- runnable: set x\n$ x=1\n-->\n\
                   <!-- runnable eventually: wait\n$ true\n-->\n";
        let blocks = parse(doc).expect("the document parses");
        assert_eq!(
            blocks,
            vec![
                Block {
                    line: 7,
                    eventually: true,
                    steps: vec![
                        Step {
                            line: 8,
                            command: "echo a \\\n  b".into(),
                            expected: vec!["a b".into()],
                        },
                        Step {
                            line: 11,
                            command: "true".into(),
                            expected: vec![],
                        },
                    ],
                },
                Block {
                    line: 13,
                    eventually: false,
                    steps: vec![Step {
                        line: 14,
                        command: "x=1".into(),
                        expected: vec![],
                    }],
                },
                Block {
                    line: 16,
                    eventually: true,
                    steps: vec![Step {
                        line: 17,
                        command: "true".into(),
                        expected: vec![],
                    }],
                },
            ]
        );
    }

    #[test]
    fn a_block_in_a_list_item_loses_the_indentation_of_its_fence() {
        let doc = "- item:\n\n  ```console runnable\n  $ echo hi\n    hi\n  ```\n";
        let blocks = parse(doc).expect("the document parses");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].steps[0].command, "echo hi");
        assert_eq!(blocks[0].steps[0].expected, vec!["  hi".to_string()]);
    }

    #[test]
    fn a_marker_shown_inside_another_block_is_not_run() {
        let doc = "````markdown\n```console runnable\n$ false\n```\n````\n";
        assert_eq!(parse(doc), Ok(vec![]));
    }

    #[test]
    fn malformed_runnable_blocks_are_errors_with_their_line() {
        let e =
            parse("text\n```console runnable\noutput first\n$ true\n```\n").expect_err("an error");
        assert!(e.contains("line 3"), "{e}");
        let e = parse("```console runnable\n$ true\n").expect_err("an error");
        assert!(e.contains("line 1") && e.contains("never closed"), "{e}");
        let e = parse("```console runnable\n```\n").expect_err("an error");
        assert!(e.contains("no `$ ` command"), "{e}");
    }
}
