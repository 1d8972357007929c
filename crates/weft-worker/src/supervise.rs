//! The per-handler supervisor (`weft __supervise -- COMMAND...`): a small
//! process between the exec worker and a handler command, so the handler's
//! whole process group dies with the worker, even on `kill -9`.
//!
//! The worker starts the supervisor as the leader of a new process group,
//! with one end of a Unix socket pair as file descriptor 3 (the control
//! socket). The supervisor starts the command in the same group (stdin,
//! stdout, stderr, working directory and environment inherited unchanged)
//! and reports on the socket, one line each: `started PID`, or
//! `spawn_error KIND MESSAGE` (KIND: `not_found`, `permission_denied` or
//! `other`) and exit status 127; then `exit CODE` or `signal NUMBER` when the
//! command ends, exiting with the same status. When the socket reaches EOF
//! while the command runs (the worker died or dropped the attempt), the
//! supervisor sends SIGTERM to the group, then SIGKILL to it (itself
//! included) after [`ORPHAN_KILL_AFTER`]. The supervisor ignores SIGTERM
//! once the command runs, so a group SIGTERM (the worker's shutdown) lets a
//! command that traps it finish while the supervisor reports. The command also gets
//! `PR_SET_PDEATHSIG(SIGKILL)` on Linux, should the supervisor itself be
//! killed. Timeouts and cancellations are unchanged: the worker kills the
//! group, which holds the supervisor, the command and its children.

use std::{
    io::{Read, Write},
    os::{
        fd::{FromRawFd, RawFd},
        unix::{net::UnixStream, process::CommandExt},
    },
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// The hidden subcommand of the `weft` binary that runs [`supervise`].
pub const SUPERVISE_COMMAND: &str = "__supervise";

/// The file descriptor the control socket is handed over on.
pub const CONTROL_FD: RawFd = 3;

/// How long the handler's group has between SIGTERM and SIGKILL once the
/// worker is gone.
pub const ORPHAN_KILL_AFTER: Duration = Duration::from_secs(1);

/// Exit status of a supervisor that could not start its command.
pub const SPAWN_FAILED_EXIT: i32 = 127;

/// Runs `argv` under supervision (see the module docs) and returns the exit
/// status the supervisor should end with. Blocking; no async runtime needed.
#[allow(unsafe_code)]
pub fn supervise(argv: &[String]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("weft {SUPERVISE_COMMAND}: no command given");
        return 2;
    };
    // SAFETY: F_GETFD only queries the descriptor's flags.
    if unsafe { libc::fcntl(CONTROL_FD, libc::F_GETFD) } < 0 {
        eprintln!(
            "weft {SUPERVISE_COMMAND} is internal to `weft worker`: it needs the control socket on fd {CONTROL_FD}"
        );
        return 2;
    }
    // SAFETY: fd 3 is open (checked above) and owned by nobody else here;
    // FD_CLOEXEC keeps it from the command.
    let control = unsafe {
        libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        UnixStream::from_raw_fd(CONTROL_FD)
    };
    let mut report = control.try_clone().expect("clone the control socket");
    let mut command = std::process::Command::new(program);
    command.args(args);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    #[cfg(target_os = "linux")]
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let kind = match err.kind() {
                std::io::ErrorKind::NotFound => "not_found",
                std::io::ErrorKind::PermissionDenied => "permission_denied",
                _ => "other",
            };
            let _ = writeln!(report, "spawn_error {kind} {err}");
            return SPAWN_FAILED_EXIT;
        }
    };
    let _ = writeln!(report, "started {}", child.id());
    // The worker's SIGTERM to the group at shutdown is for the command: the
    // supervisor stays to report its end (dying would fire the command's
    // PDEATHSIG). Set after the spawn, so the command keeps the default.
    // SAFETY: signal has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }

    let finished = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let finished = finished.clone();
        let mut control = control;
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match control.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            if finished.load(Ordering::SeqCst) {
                return;
            }
            // The worker is gone: take the whole group down, grandchildren
            // included. SIGTERM first (ignored here, so this thread lives to
            // send the SIGKILL that ends the group and the supervisor).
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(0, libc::SIGTERM);
            }
            std::thread::sleep(ORPHAN_KILL_AFTER);
            // SAFETY: as above.
            unsafe {
                libc::killpg(0, libc::SIGKILL);
            }
        })
    };
    let status = child.wait();
    let code = match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => {
                    let _ = writeln!(report, "exit {code}");
                    code
                }
                (None, Some(signal)) => {
                    let _ = writeln!(report, "signal {signal}");
                    128 + signal
                }
                (None, None) => 1,
            }
        }
        Err(err) => {
            let _ = writeln!(report, "wait_error {err}");
            1
        }
    };
    finished.store(true, Ordering::SeqCst);
    if watchdog.is_finished() {
        return code;
    }
    // Still watching: the worker is alive, or its death is being handled
    // (then the watchdog's SIGKILL ends this process too).
    // SAFETY: F_GETFL on a descriptor we own; a read of 0 bytes with
    // MSG_PEEK|MSG_DONTWAIT tells whether the peer has closed.
    let peer_closed = unsafe {
        let mut byte = 0u8;
        libc::recv(
            CONTROL_FD,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        ) == 0
    };
    if peer_closed {
        let _ = watchdog.join();
    }
    code
}
