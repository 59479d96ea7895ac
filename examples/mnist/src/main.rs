//! The `mnist` binary; the program itself is the library's [`mnist::main`].

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    mnist::main()
}

/// Rust ignores SIGPIPE, so `mnist ... | head` would panic on its next print ("failed printing
/// to stdout: Broken pipe"). A command-line tool should end quietly instead, as `cat` does.
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}
