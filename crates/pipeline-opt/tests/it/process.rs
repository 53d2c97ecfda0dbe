//! The process layer on real processes: `stop_group` against groups that leave at
//! SIGTERM, ignore it, or leave only in part; `kill_marked` against marked and unmarked
//! processes.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pipeline_opt::process::{self, RUN_ID_VAR, RUNS_VAR};

/// `sh -c script` in a process group of its own, as the tool starts what it supervises.
fn spawn_group(script: &str, env: &[(&str, &str)]) -> Child {
    let sh = xshell::Shell::new().expect("a shell");
    let mut cmd: Command = xshell::cmd!(sh, "sh -c {script}").to_command();
    cmd.envs(env.iter().copied()).process_group(0);
    let child = cmd.spawn().expect("sh starts");
    // Let the script set its traps and start its children before it is signalled.
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Processes of group `pgid` that still run (zombies are whoever adopted them's to reap).
fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name: state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

/// Whether `child` was reaped by someone else (waiting for it finds no such child).
fn reaped(child: &mut Child) -> bool {
    child.try_wait().is_err()
}

/// Stops `child`'s group with `grace`; checks that nothing of it runs afterwards and
/// that its leader was reaped. Returns whether it went within the grace, and how long
/// the stop took.
#[track_caller]
fn stop_and_check(mut child: Child, grace: Duration) -> (bool, Duration) {
    let pgid = child.id() as i32;
    let start = Instant::now();
    let within_grace = process::stop_group(pgid, grace);
    let took = start.elapsed();
    // SIGKILL is delivered asynchronously: on a busy machine a killed member may not yet
    // have been scheduled to die when the stop returns. A member that was never killed
    // (a stop that waits for the leader only) still runs when this gives up.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !live_members(pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(live_members(pgid), Vec::<i32>::new(), "the whole group is gone");
    assert!(reaped(&mut child), "the leader is reaped");
    (within_grace, took)
}

#[test]
fn stop_group_returns_before_the_grace_when_the_group_leaves_at_sigterm() {
    let child = spawn_group("sleep 300 & wait", &[]);
    let (within_grace, took) = stop_and_check(child, Duration::from_secs(10));
    assert!(within_grace, "the group left at SIGTERM");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn stop_group_kills_a_group_that_ignores_sigterm_after_the_grace() {
    let child = spawn_group("trap '' TERM; sleep 300 & wait", &[]);
    let grace = Duration::from_millis(500);
    let (within_grace, took) = stop_and_check(child, grace);
    assert!(!within_grace, "it took SIGKILL");
    assert!(took >= grace, "SIGKILL came before the grace was over: {took:?}");
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");
}

#[test]
fn stop_group_waits_for_the_whole_group_not_only_its_leader() {
    // The leader leaves at SIGTERM; its child, in the same group, ignores it.
    let child = spawn_group("sh -c \"trap '' TERM; exec sleep 300\" & wait", &[]);
    assert_eq!(live_members(child.id() as i32).len(), 2, "the leader and its child run");
    let grace = Duration::from_millis(500);
    let (within_grace, took) = stop_and_check(child, grace);
    assert!(!within_grace, "the child outlived SIGTERM");
    assert!(took >= grace, "took {took:?}");
}

#[test]
fn a_stop_until_the_leader_is_gone_neither_waits_for_the_group_nor_reaps() {
    // The pool's way: its servers are reaped by their own thread, and a pid file's
    // process is checked by its start time. Here the leader leaves at the polite
    // signal; its child ignores it and is left for the caller.
    let mut child = spawn_group("sh -c \"trap '' QUIT; exec sleep 300\" & wait", &[]);
    let pgid = child.id() as i32;
    let leader_runs = || live_members(pgid).contains(&pgid);
    let start = Instant::now();
    let within_grace = process::GroupStop::new(Duration::from_secs(10))
        .signal(process::SIGQUIT)
        .until_leader_gone(&leader_runs)
        .stop(&[pgid]);
    assert!(within_grace, "the leader left at SIGQUIT");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(matches!(child.try_wait(), Ok(Some(_))), "the leader was left for us to reap");
    assert_eq!(live_members(pgid).len(), 1, "its child still runs");
    process::signal_group(pgid, process::SIGKILL);
}

#[test]
fn kill_marked_stops_marked_processes_and_leaves_an_unmarked_one() {
    let run_id = format!("process-test-{}", std::process::id());
    let nested = format!("outer-run:{run_id}");
    let mut marked = spawn_group("exec sleep 300", &[(RUN_ID_VAR, &run_id)]);
    let mut stubborn = spawn_group("trap '' TERM; exec sleep 300", &[(RUN_ID_VAR, &run_id)]);
    let mut inner = spawn_group("exec sleep 300", &[(RUNS_VAR, &nested)]);
    let mut unmarked = spawn_group("exec sleep 300", &[(RUN_ID_VAR, "another-run")]);

    let grace = Duration::from_millis(500);
    let start = Instant::now();
    let found = process::kill_marked(&run_id, None, grace);
    assert_eq!(found, 3, "the two marked processes and the nested run's one");
    assert!(start.elapsed() >= grace, "the stubborn one had its grace period");
    assert_eq!(process::marked_processes(&run_id, None), Vec::<i32>::new());
    for child in [&mut marked, &mut stubborn, &mut inner] {
        assert!(reaped(child), "pid {} was reaped", child.id());
    }
    assert!(matches!(unmarked.try_wait(), Ok(None)), "the unmarked process still runs");
    let _ = unmarked.kill();
    let _ = unmarked.wait();
}
