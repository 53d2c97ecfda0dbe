//! The process layer: how the tool marks, signals, stops and reaps the processes it
//! starts, and how a command learns that it was asked to stop. The only module that
//! talks to the kernel about processes, so the layers above (orchestrator, bench, pool)
//! hold no `libc` of their own beyond what must run between fork and exec.
//!
//! Linux first: process groups, `/proc/PID/environ`, `wait4`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

pub use libc::{SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM};

/// Every process a run starts carries `PIPELINE_OPT_RUN_ID=<run id>` in its environment.
pub const RUN_ID_VAR: &str = "PIPELINE_OPT_RUN_ID";
/// Colon-separated ids of every enclosing run, ours last: a nested run (a test of the
/// workspace that itself runs pipeline-opt) overrides [`RUN_ID_VAR`] but keeps this list,
/// so the outer run still finds its grandchildren.
pub const RUNS_VAR: &str = "PIPELINE_OPT_RUNS";
/// The id of the stage a process belongs to.
pub const STAGE_VAR: &str = "PIPELINE_OPT_STAGE";

/// How often a stop looks again whether what it stops is gone, unless its caller says.
const POLL: Duration = Duration::from_millis(20);
/// How long a stop waits for what it killed with SIGKILL to be gone and reaped: the
/// kernel ends it at once unless it is stuck in uninterruptible sleep.
const KILL_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Run markers

/// The value of [`RUNS_VAR`] for the processes of run `run_id`: the enclosing runs' ids
/// (from our own environment), then ours.
pub fn run_markers(run_id: &str) -> String {
    match std::env::var(RUNS_VAR) {
        Ok(outer) if !outer.is_empty() => format!("{outer}:{run_id}"),
        _ => run_id.to_string(),
    }
}

/// Processes (other than us) whose environment carries `run_id` as [`RUN_ID_VAR`] or in
/// [`RUNS_VAR`], and, when `stage` is given, that stage as [`STAGE_VAR`]. Linux: reads
/// `/proc/*/environ`; elsewhere it finds nothing.
pub fn marked_processes(run_id: &str, stage: Option<&str>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let in_stage = |stage: &str| {
            env.split(|&b| b == 0).any(|e| entry_value(e, STAGE_VAR) == Some(stage.as_bytes()))
        };
        if environ_marks_run(&env, run_id.as_bytes()) && stage.is_none_or(in_stage) {
            out.push(pid);
        }
    }
    out
}

/// Sends `sig` (0: none, only count) to every process that [`marked_processes`] finds;
/// returns how many it found.
pub fn signal_marked(run_id: &str, stage: Option<&str>, sig: i32) -> usize {
    let found = marked_processes(run_id, stage);
    for &pid in &found {
        signal_process(pid, sig);
    }
    found.len()
}

/// Stops every process still carrying the run's marker: SIGTERM, up to `grace` for them
/// to leave, then SIGKILL. Reaps the ones that were reparented to us. Returns how many
/// it found.
pub fn kill_marked(run_id: &str, stage: Option<&str>, grace: Duration) -> usize {
    let found = marked_processes(run_id, stage);
    if found.is_empty() {
        return 0;
    }
    let mut sweep = |sig| {
        reap(&found);
        signal_marked(run_id, stage, sig)
    };
    GroupStop::new(grace).with_others(&mut sweep).stop(&[]);
    reap(&found);
    found.len()
}

/// Whether an environment block (`/proc/PID/environ`, entries ending in NUL) marks a
/// process of run `run_id`: as [`RUN_ID_VAR`] or in [`RUNS_VAR`]'s list. Allocation-free,
/// for the watchdog's sweep too.
fn environ_marks_run(environ: &[u8], run_id: &[u8]) -> bool {
    environ.split(|&b| b == 0).any(|entry| {
        entry_value(entry, RUN_ID_VAR) == Some(run_id)
            || entry_value(entry, RUNS_VAR)
                .is_some_and(|runs| runs.split(|&b| b == b':').any(|id| id == run_id))
    })
}

/// The value of an environment entry `VAR=value` for `var`.
fn entry_value<'a>(entry: &'a [u8], var: &str) -> Option<&'a [u8]> {
    entry.strip_prefix(var.as_bytes())?.strip_prefix(b"=")
}

/// Reaps those of `pids` that are our (possibly adopted) children and have exited.
fn reap(pids: &[i32]) {
    for &pid in pids {
        let mut status = 0;
        // SAFETY: WNOHANG wait on a specific pid; ECHILD if it is not ours.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// The marker sweep for a forked child of a multi-threaded process (the run's watchdog),
/// which may not allocate: raw system calls into buffers allocated before the fork.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) struct MarkerSweep {
    run_id: Vec<u8>,
    dirents: Vec<u8>,
    environ: Vec<u8>,
}

impl MarkerSweep {
    /// Allocates the sweep's buffers (before the fork).
    pub(crate) fn new(run_id: &str) -> MarkerSweep {
        MarkerSweep {
            run_id: run_id.as_bytes().to_vec(),
            dirents: vec![0u8; 32 * 1024],
            environ: vec![0u8; 256 * 1024],
        }
    }

    /// Without `/proc` (off Linux) no process can be read: the sweep finds none, and
    /// only the stages' process groups are signalled.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn signal(&mut self, _sig: i32) -> usize {
        0
    }

    /// Sends `sig` (0: none, only count) to every process but us that carries the run's
    /// marker; returns how many there were. Raw system calls only.
    #[cfg(target_os = "linux")]
    pub(crate) fn signal(&mut self, sig: i32) -> usize {
        // SAFETY (whole body): system calls on our own descriptors into buffers of the
        // lengths passed.
        unsafe {
            let me = libc::getpid();
            let proc_fd = libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if proc_fd < 0 {
                return 0;
            }
            let mut found = 0;
            loop {
                let n = libc::syscall(
                    libc::SYS_getdents64,
                    proc_fd,
                    self.dirents.as_mut_ptr(),
                    self.dirents.len(),
                );
                if n <= 0 {
                    break;
                }
                let mut off = 0usize;
                while off < n as usize {
                    // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                    let rec = &self.dirents[off..n as usize];
                    let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
                    let name = &rec[19..reclen.min(rec.len())];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    off += reclen.max(1);
                    let Some(pid) = parse_pid(name) else { continue };
                    // A copy: the check reuses our buffers.
                    let mut digits = [0u8; 9];
                    digits[..name.len()].copy_from_slice(name);
                    let name = &digits[..name.len()];
                    if pid == me || !self.carries_marker(name) {
                        continue;
                    }
                    found += 1;
                    if sig != 0 {
                        libc::kill(pid, sig);
                    }
                }
            }
            libc::close(proc_fd);
            found
        }
    }

    /// Whether `/proc/<name>/environ` holds the run's marker.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn carries_marker(&mut self, name: &[u8]) -> bool {
        let mut path = [0u8; 64];
        let parts: [&[u8]; 3] = [b"/proc/", name, b"/environ\0"];
        let mut len = 0;
        for part in parts {
            if len + part.len() > path.len() {
                return false;
            }
            path[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        // SAFETY: `path` is NUL-terminated; reads stay within `environ`.
        let n = unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY);
            if fd < 0 {
                return false;
            }
            let mut n = 0usize;
            while n < self.environ.len() {
                let r =
                    libc::read(fd, self.environ[n..].as_mut_ptr().cast(), self.environ.len() - n);
                if r <= 0 {
                    break;
                }
                n += r as usize;
            }
            libc::close(fd);
            n
        };
        environ_marks_run(&self.environ[..n], &self.run_id)
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(name.iter().fold(0i32, |n, &d| n * 10 + i32::from(d - b'0')))
}

// ---------------------------------------------------------------------------------------
// Signals a command receives

/// The signal that asked us to stop (0 = none), set by the handler.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// How many stop signals arrived: a second Ctrl-C skips the grace period.
static SIGNAL_COUNT: AtomicI32 = AtomicI32::new(0);
/// Whether [`install_signal_handlers_for_command`] has run: the handlers then stay, and
/// a signal that arrived before the orchestrator started is kept, not reset.
static HANDLERS_FOR_COMMAND: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics: async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
    SIGNAL_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handlers for the whole command, first thing (the xtask's
/// `optimize` and `check` do): a signal during start-up (metadata, fingerprints), while
/// waiting for another run's lock or during an all-cached run then ends the run as
/// interrupted, with a record and exit 130, instead of killing the process silently.
pub fn install_signal_handlers_for_command() {
    install_signal_handlers();
    HANDLERS_FOR_COMMAND.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handlers for one run (the orchestrator, bench-compare),
/// forgetting a signal left over from an earlier run in the same process; a no-op once
/// [`install_signal_handlers_for_command`] has run.
pub(crate) fn install_signal_handlers() {
    if HANDLERS_FOR_COMMAND.load(Ordering::SeqCst) {
        return;
    }
    install_stop_handlers(&[SIGINT, SIGTERM]);
}

/// The one way a handler is installed: `signals` then only record themselves for
/// [`received_signal`] and [`signal_count`] (which start again from none), and system
/// calls they interrupt restart.
pub(crate) fn install_stop_handlers(signals: &[i32]) {
    SIGNAL.store(0, Ordering::SeqCst);
    SIGNAL_COUNT.store(0, Ordering::SeqCst);
    for &sig in signals {
        set_disposition(sig, on_signal as *const () as usize);
    }
}

/// Makes this process deaf to the signals a terminal or a process-group kill sends
/// (the run's watchdog, which outlives whoever sent them). Safe between fork and exec.
pub(crate) fn ignore_terminal_signals() {
    for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, libc::SIGPIPE] {
        set_disposition(sig, libc::SIG_IGN);
    }
}

fn set_disposition(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: sigaction is given a zeroed, fully initialised struct; every handler we
    // install only touches atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// The signal that asked this command to stop since its handlers were installed, if
/// any: for the orchestrator's loop, long-running commands (bench-compare) and the parts
/// of a run outside the orchestrator (start-up, the wait for another run's lock, an
/// all-cached run).
pub fn received_signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// How many stop signals arrived since the handlers were installed.
pub fn signal_count() -> i32 {
    SIGNAL_COUNT.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------
// Signalling and stopping processes

/// Sends `sig` to process `pid`; whether it was delivered (false once it is gone).
pub fn signal_process(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; harmless if the process is gone.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Sends `sig` to the process group `pgid`; whether it was delivered (false once the
/// group is empty). Signal 0 only asks whether the group still has a process.
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Stops the process group `pgid` that we started: SIGTERM, up to `grace` for the whole
/// group to go, then SIGKILL, and its leader reaped when it is our child. Returns
/// whether it went within the grace period.
pub fn stop_group(pgid: i32, grace: Duration) -> bool {
    GroupStop::new(grace).stop(&[pgid])
}

/// How to stop process groups, for callers that need more than [`stop_group`]: another
/// polite signal, waiting for a leader known by its start time rather than for the
/// group, processes outside the groups that go with them. Allocation-free, so the run's
/// watchdog can use it in a forked child of a multi-threaded process.
pub struct GroupStop<'a> {
    signal: i32,
    grace: Duration,
    leader_alive: Option<&'a dyn Fn() -> bool>,
    others: Option<&'a mut dyn FnMut(i32) -> usize>,
    poll: Duration,
}

impl<'a> GroupStop<'a> {
    /// SIGTERM, `grace`, then SIGKILL, waiting for the whole group.
    pub fn new(grace: Duration) -> GroupStop<'a> {
        GroupStop { signal: SIGTERM, grace, leader_alive: None, others: None, poll: POLL }
    }

    /// Looks whether the processes are gone every `poll` (a quick server's stop is
    /// waited for closely; a sweep of all of `/proc` is not repeated so often).
    pub fn poll(mut self, poll: Duration) -> GroupStop<'a> {
        self.poll = poll;
        self
    }

    /// Another polite signal than SIGTERM (PostgreSQL's immediate shutdown is SIGQUIT).
    pub fn signal(mut self, sig: i32) -> GroupStop<'a> {
        self.signal = sig;
        self
    }

    /// Waits for the leader alone, as `alive` says, and reaps nothing: for a process
    /// that another owner reaps (a pool server that its supervisor thread waits for) or
    /// that a pid file names, where `alive` checks that the pid is still the process
    /// started (a reused pid is never signalled). A leader that does not lead a group
    /// is signalled itself.
    pub fn until_leader_gone(mut self, alive: &'a dyn Fn() -> bool) -> GroupStop<'a> {
        self.leader_alive = Some(alive);
        self
    }

    /// Also stops processes outside the groups (those carrying a run's marker):
    /// `others(sig)` sends `sig` (0: none) and returns how many it found.
    pub fn with_others(mut self, others: &'a mut dyn FnMut(i32) -> usize) -> GroupStop<'a> {
        self.others = Some(others);
        self
    }

    /// Stops `pgids` (and the others). Returns whether everything went within the grace
    /// period, i.e. without SIGKILL.
    pub fn stop(mut self, pgids: &[i32]) -> bool {
        self.send(pgids, self.signal);
        if self.gone_within_grace(pgids) {
            return true;
        }
        self.send(pgids, SIGKILL);
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            // A process may have started one more while it was being stopped.
            let others_left = self.others.as_mut().is_some_and(|o| o(SIGKILL) > 0);
            if (!others_left && self.killed_gone(pgids)) || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(self.poll);
        }
    }

    fn send(&mut self, pgids: &[i32], sig: i32) {
        for &pgid in pgids {
            match self.leader_alive {
                Some(alive) if alive() && !signal_group(pgid, sig) => {
                    signal_process(pgid, sig);
                }
                Some(_) => {}
                None => {
                    signal_group(pgid, sig);
                }
            }
        }
        if let Some(others) = self.others.as_mut() {
            others(sig);
        }
    }

    /// Waits up to the grace period for the groups (or leaders) and the others to go.
    fn gone_within_grace(&mut self, pgids: &[i32]) -> bool {
        let deadline = Instant::now() + self.grace;
        loop {
            let left = match self.leader_alive {
                Some(alive) => alive(),
                None => pgids.iter().any(|&pgid| {
                    // A zombie leader keeps its group alive: reap it first.
                    reap(&[pgid]);
                    signal_group(pgid, 0)
                }),
            };
            let others_left = self.others.as_mut().is_some_and(|o| o(0) > 0);
            if !left && !others_left {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(self.poll);
        }
    }

    /// After SIGKILL: whether the leaders are gone (and, ours, reaped). The rest of a
    /// killed group cannot outlive the signal, and its zombies are whoever adopted
    /// them's to reap.
    fn killed_gone(&self, pgids: &[i32]) -> bool {
        match self.leader_alive {
            Some(alive) => !alive(),
            None => pgids.iter().all(|&pgid| {
                let mut status = 0;
                // SAFETY: WNOHANG wait on a specific pid: 0 while our child runs, the
                // pid once reaped, -1 (ECHILD) for one not ours or already reaped.
                unsafe { libc::waitpid(pgid, &mut status, libc::WNOHANG) != 0 }
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Starting and reaping

/// Reaps the zombies this process adopted as a subreaper: exited children that are not
/// in `ours` (the stages and helpers whose exit their own code waits for) and not in this
/// process's group, where the children that library code spawns and waits for run. An
/// adopted orphan (a daemon a test left, a test binary's child whose parent died) is
/// otherwise a zombie until the run ends, and a test that waits for its process group
/// to be gone, which passes under init, never sees it go.
pub fn reap_adopted(ours: &[i32]) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if ours.contains(&pid) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command name: state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let group = fields.get(2).and_then(|g| g.parse::<i32>().ok());
            if fields.first() == Some(&"Z") && group.is_some_and(|g| g != own_group) {
                reap(&[pid]);
            }
        }
    }
}

/// Makes this process a child subreaper: processes whose parent died are reparented to
/// us instead of init, so they can still be found and reaped (process-wide).
/// Linux only: elsewhere orphans go to init, and only the marker-less process groups
/// are left to stop them.
pub fn become_subreaper() {
    // SAFETY: plain prctl with integer arguments.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    };
}

/// A pipe whose ends are closed on exec (a child gets one only as its stdout/stderr).
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    #[cfg(target_os = "linux")]
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    // No pipe2 on macOS: close-on-exec set right after (the stages are spawned from
    // this thread's loop, not concurrently with this call's callers).
    #[cfg(not(target_os = "linux"))]
    let r = unsafe {
        let r = libc::pipe(fds.as_mut_ptr());
        if r == 0 {
            libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        }
        r
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How a reaped child ended, with the resource use of its whole tree (every descendant
/// it waited for).
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The wait status; -1 when waiting failed and nothing is known.
    status: i32,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    pub peak_rss_kib: u64,
}

impl Reaped {
    /// A child whose end could not be learned (the wait failed).
    pub const UNKNOWN: Reaped = Reaped {
        status: -1,
        cpu_user: Duration::ZERO,
        cpu_system: Duration::ZERO,
        peak_rss_kib: 0,
    };

    /// The exit code, when the child exited (rather than being killed by a signal).
    pub fn exit_code(&self) -> Option<i32> {
        (self.status >= 0 && libc::WIFEXITED(self.status)).then(|| libc::WEXITSTATUS(self.status))
    }

    /// The exit code, or 128 plus the signal that killed it, as a shell reports it.
    pub fn shell_code(&self) -> Option<i32> {
        self.exit_code().or_else(|| {
            (self.status >= 0 && libc::WIFSIGNALED(self.status))
                .then(|| 128 + libc::WTERMSIG(self.status))
        })
    }
}

/// Reaps our child `pid` and returns how it ended with the rusage of its whole tree.
/// `pid` must be a child not reaped by anyone else.
pub fn wait_with_rusage(pid: i32) -> std::io::Result<Reaped> {
    let mut status = 0;
    // SAFETY: rusage is plain data, fully written by wait4 on success.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: status and rusage are valid pointers for wait4 to write.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return Ok(Reaped {
                status,
                cpu_user: timeval_duration(rusage.ru_utime),
                cpu_system: timeval_duration(rusage.ru_stime),
                peak_rss_kib: rusage.ru_maxrss.max(0) as u64,
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// A `timeval` from rusage as a duration (negative fields, which the kernel never
/// writes, count as zero).
fn timeval_duration(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000)
}

// ---------------------------------------------------------------------------------------
// Holding descriptors for as long as a process lives, across its exec

/// Keeps `fds` open in a forked holder until this process (the same pid, across an
/// exec) exits, then lets them close: how a lease's lock outlives the lease runner's exec
/// of the test and no more. The holder watches this process through a pidfd; it leaves
/// the process group and session (no signal meant for the test's group reaches it), puts
/// stdin/stdout/stderr on /dev/null and closes every other descriptor, so the test's
/// output pipes close when the test's do. Nothing here waits for the holder: the caller
/// may exec at once. After that exec the holder is the test's child (it never exits
/// before the test, so a test's `waitpid` never sees it end); once the test is gone it
/// is reaped by the subreaper or init.
///
/// Call it from a single-threaded process: it forks. Linux only (pidfd, close_range).
#[cfg(target_os = "linux")]
pub fn hold_until_exit(fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let err = std::io::Error::last_os_error;
    // SAFETY: pidfd_open on our own pid; the result is a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as i32;
    if pidfd < 0 {
        return Err(err());
    }
    // SAFETY: pidfd is a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: a static NUL-terminated path.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null < 0 {
        return Err(err());
    }
    // SAFETY: null is a fresh descriptor we own.
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    let mut keep = [-1; 16];
    if fds.len() + 1 > keep.len() {
        return Err(std::io::Error::other("too many descriptors to hold"));
    }
    keep[..fds.len()].copy_from_slice(fds);
    keep[fds.len()] = pidfd.as_raw_fd();
    let keep = &mut keep[..fds.len() + 1];
    keep.sort_unstable();
    // SAFETY: the caller is single-threaded; the child only makes async-signal-safe
    // calls (setsid, dup2, close_range, poll, _exit) on values prepared above.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(err());
    }
    if child == 0 {
        // SAFETY: see above; nothing here returns to the caller's code.
        unsafe {
            libc::setsid();
            for target in 0..3 {
                libc::dup2(null.as_raw_fd(), target);
            }
            // Close everything from 3 up but the descriptors we hold.
            let mut low: libc::c_uint = 3;
            for &fd in keep.iter() {
                if fd as libc::c_uint > low {
                    libc::syscall(libc::SYS_close_range, low, fd as libc::c_uint - 1, 0);
                }
                low = low.max(fd as libc::c_uint + 1);
            }
            libc::syscall(libc::SYS_close_range, low, libc::c_uint::MAX, 0);
            let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            while libc::poll(&mut p, 1, -1) < 0 && *libc::__errno_location() == libc::EINTR {}
            libc::_exit(0);
        }
    }
    Ok(())
}

/// Off Linux there is no pidfd to watch the process across its exec: per-test-process
/// leases (the lease runner) are refused with this error; whole-stage leases still work.
#[cfg(not(target_os = "linux"))]
pub fn hold_until_exit(_fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "a lease per test process needs Linux (pidfd_open); use a whole-stage lease here",
    ))
}
