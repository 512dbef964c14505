//! Support for `lab_samples.rs`: the console sample apps (`sample-apps/run chat|stream`)
//! started in the two-phone lab's namespaces exactly as a user starts them, their stdin
//! typed into, and their output lines parsed.
//!
//! The samples print one line per event, `[HH:MM:SS.mmm] WORD details` (see
//! sample-apps/README.md); msocket's own log goes to stderr and lands in the same
//! collected log, where these helpers skip it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use msocket_lab::Netns;

use super::lab_relay_support::World;
use super::real_programs_support::{msocketd_bin, run_ok, Proc};

/// `sample-apps/run` in this checkout.
pub fn sample_run() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-apps/run")
}

/// The target directory the tests' binaries (and so the FFI library) were built in.
pub fn target_dir() -> PathBuf {
    let bin = msocketd_bin();
    bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| panic!("no target directory above {}", bin.display()))
}

/// Builds the samples once (`sample-apps/run build`, outside the lab, where the first
/// build may fetch its tools), so that starting one in a namespace only checks the build.
pub fn build_samples() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let started = Instant::now();
        let mut cmd = Command::new(sample_run());
        cmd.arg("build").env("CARGO_TARGET_DIR", target_dir());
        run_ok("sample-apps/run build", cmd, Duration::from_secs(900));
        println!("samples built (or found up to date) in {} ms", started.elapsed().as_millis());
    });
}

/// One line a sample printed: its WORD and the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Out {
    pub word: String,
    pub rest: String,
}

/// The sample lines (not msocket's log) in `log`, in order.
pub fn outputs(log: &str) -> Vec<Out> {
    log.lines()
        .filter_map(|l| {
            let body = l.strip_prefix('[')?;
            let (stamp, rest) = body.split_once("] ")?;
            if stamp.len() != 12 || !stamp.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '.') {
                return None;
            }
            let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Out { word: word.to_string(), rest: rest.trim_start().to_string() })
        })
        .collect()
}

/// A console sample running in a namespace, its stdin ours to type into.
pub struct App {
    pub proc: Proc,
    stdin: Option<ChildStdin>,
}

impl App {
    /// `sample-apps/run ARGS…` in `ns`, with the lab's name service.
    pub fn start(w: &World, ns: &Netns, what: &str, args: &[&str]) -> App {
        build_samples();
        let mut cmd = ns.command(sample_run());
        cmd.args(args).args(["--names", &w.names_url]).env("CARGO_TARGET_DIR", target_dir()).env("NO_COLOR", "1").stdin(Stdio::piped());
        let mut proc = Proc::spawn_both(what, cmd);
        let stdin = Some(proc.take_stdin());
        App { proc, stdin }
    }

    /// Types `line` (and Enter).
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{}: stdin already closed", self.proc.what()));
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("{}: typing {line:?}: {e}\n{}", self.proc.what(), self.proc.tail()));
    }

    /// Ends its input (what Ctrl-D does).
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Its sample lines so far.
    pub fn outputs(&self) -> Vec<Out> {
        outputs(&self.proc.log())
    }

    /// Lines with `word`, in order.
    pub fn lines(&self, word: &str) -> Vec<String> {
        self.outputs().into_iter().filter(|o| o.word == word).map(|o| o.rest).collect()
    }

    /// Waits (bounded) until `ok` holds of its output lines; panics with `context` and
    /// its log if it does not, or if the program ended first.
    pub fn wait_for(&mut self, desc: &str, timeout: Duration, context: &str, ok: impl Fn(&[Out]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ok(&self.outputs()) {
                return;
            }
            if let Some(status) = self.proc.wait_exit(Duration::ZERO) {
                panic!("{} exited ({status}) before {desc}\n{}\n{context}", self.proc.what(), self.proc.tail());
            }
            if Instant::now() >= deadline {
                panic!("{}: no {desc} within {timeout:?}\n{}\n{context}", self.proc.what(), self.proc.tail());
            }
            // Polling a log other threads append to, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The first line with `word` whose rest contains `needle`, waited for (bounded).
    pub fn wait_line(&mut self, word: &str, needle: &str, timeout: Duration, context: &str) -> String {
        self.wait_for(&format!("\"{word} …{needle}…\" line"), timeout, context, |outs| outs.iter().any(|o| o.word == word && o.rest.contains(needle)));
        self.lines(word).into_iter().find(|l| l.contains(needle)).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // MSOCKET_SAMPLE_LOGS=DIR: every sample's whole log kept there, to read after a run.
        if let Some(dir) = std::env::var_os("MSOCKET_SAMPLE_LOGS") {
            let name: String = self.proc.what().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(Path::new(&dir).join(format!("{name}.{}.log", std::process::id())), self.proc.log());
        }
    }
}

/// The value of `key=` among the words of `line` ("" if absent).
pub fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('='))).unwrap_or("")
}

/// `value` as a number; panics naming the line if it is not one.
pub fn number(line: &str, key: &str) -> f64 {
    let v = value(line, key);
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    digits.parse().unwrap_or_else(|_| panic!("{key}= is not a number in {line:?}"))
}
